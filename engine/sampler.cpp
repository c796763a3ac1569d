// Sampler chains (see sampler.h).
#include "engine/sampler.h"

#include <llama.h>

#include <cmath>
#include <random>
#include <string>

#include "engine/context.h"

namespace llmd::engine {
namespace {

Error bad(const std::string& field, const std::string& range) {
  return Error(Errc::invalid_argument, field + " must be " + range);
}

}  // namespace

Status validate_sampling(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f || p.temperature > 100.0f) {
    return bad("temperature", "between 0 and 100");
  }
  if (p.top_k < 0) return bad("top_k", "0 (off) or more");
  if (!std::isfinite(p.top_p) || p.top_p <= 0.0f || p.top_p > 1.0f) return bad("top_p", "in (0, 1]");
  if (!std::isfinite(p.min_p) || p.min_p < 0.0f || p.min_p > 1.0f) return bad("min_p", "between 0 and 1");
  if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0.0f || p.repeat_penalty > 10.0f) {
    return bad("repeat_penalty", "in (0, 10]");
  }
  if (p.repeat_last_n < 0 || p.repeat_last_n > 65536) return bad("repeat_last_n", "between 0 and 65536");
  return {};
}

Result<Sampler> Sampler::create(const Model& model, const SamplingParams& p) {
  LLMD_TRY_STATUS(validate_sampling(p));
  const llama_vocab* vocab = llama_model_get_vocab(model.handle());
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);

  uint32_t seed = 0;
  if (p.seed) {
    seed = *p.seed;
  } else {
    std::random_device rd;
    seed = rd();
  }
  // LLAMA_DEFAULT_SEED asks llama.cpp for a random seed; a caller who names it gets it exactly.
  if (seed == LLAMA_DEFAULT_SEED) seed = LLAMA_DEFAULT_SEED - 1;

  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  llama_sampler* chain = llama_sampler_chain_init(cp);
  const bool penalise = p.repeat_penalty != 1.0f && p.repeat_last_n > 0;
  if (penalise) {
    llama_sampler_chain_add(chain, llama_sampler_init_penalties(n_vocab, p.repeat_last_n, p.repeat_penalty, 0.0f, 0.0f));
  }
  const bool greedy = p.temperature <= 0.0f;
  if (greedy) {
    llama_sampler_chain_add(chain, llama_sampler_init_greedy());
  } else {
    if (p.top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(std::min(p.top_k, n_vocab)));
    if (p.top_p < 1.0f) llama_sampler_chain_add(chain, llama_sampler_init_top_p(p.top_p, 1));
    if (p.min_p > 0.0f) llama_sampler_chain_add(chain, llama_sampler_init_min_p(p.min_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(p.temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(seed));
  }
  return Sampler(chain, seed, greedy, penalise ? p.repeat_last_n : 0);
}

Sampler::Sampler(Sampler&& o) noexcept
    : chain_(std::exchange(o.chain_, nullptr)), seed_(o.seed_), greedy_(o.greedy_), history_(o.history_) {}

Sampler& Sampler::operator=(Sampler&& o) noexcept {
  if (this != &o) {
    if (chain_ != nullptr) llama_sampler_free(chain_);
    chain_ = std::exchange(o.chain_, nullptr);
    seed_ = o.seed_;
    greedy_ = o.greedy_;
    history_ = o.history_;
  }
  return *this;
}

Sampler::~Sampler() {
  if (chain_ != nullptr) llama_sampler_free(chain_);
}

Token Sampler::sample(Context& ctx, int32_t batch_index) {
  if (greedy_ && history_ == 0) {
    // Plain greedy: an argmax over the logits, first maximum wins as in llama.cpp's greedy sampler.
    // llama_sampler_sample would first build an n_vocab-entry candidate array (about 40 us per
    // token on a 49k vocabulary, measured), which is most of the engine's per-token overhead.
    const float* logits = ctx.logits(batch_index);
    if (logits != nullptr) {
      const int32_t n = llama_vocab_n_tokens(llama_model_get_vocab(ctx.model().handle()));
      Token best = 0;
      for (int32_t i = 1; i < n; ++i) {
        if (logits[i] > logits[best]) best = i;
      }
      return best;
    }
  }
  return llama_sampler_sample(chain_, ctx.handle(), batch_index);
}

void Sampler::accept(std::span<const Token> tokens) {
  if (history_ <= 0) return;  // nothing in the chain looks at history
  const size_t keep = std::min(tokens.size(), static_cast<size_t>(history_));
  for (Token t : tokens.subspan(tokens.size() - keep)) llama_sampler_accept(chain_, t);
}

}  // namespace llmd::engine
