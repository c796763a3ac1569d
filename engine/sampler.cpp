// Sampler chains (see sampler.h).
#include "engine/sampler.h"

#include <llama.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "engine/context.h"

namespace llmd::engine {
namespace {

// Where grouping by first byte pays (Sampler::filter): measured on stories260K (512 tokens: the
// groups' checks cost more than the whole filter) and the smollm2 shape (49k: ~10x less work).
constexpr int32_t kMinVocabToGroup = 4096;
constexpr std::size_t kMinGroupToCheck = 16;

Error bad(const std::string& field, const std::string& range) {
  return Error(Errc::invalid_argument, field + " must be " + range).with_param(field);
}

}  // namespace

Result<llama_sampler*> make_grammar(const Model& model, const GrammarParams& g) {
  const llama_vocab* vocab = llama_model_get_vocab(model.handle());
  llama_sampler* grammar = nullptr;
  if (g.lazy) {
    std::vector<const char*> patterns;
    for (const auto& s : g.trigger_patterns) patterns.push_back(s.c_str());
    grammar = llama_sampler_init_grammar_lazy_patterns(vocab, g.grammar.c_str(), "root", patterns.data(), patterns.size(),
                                                       g.trigger_tokens.data(), g.trigger_tokens.size());
  } else {
    grammar = llama_sampler_init_grammar(vocab, g.grammar.c_str(), "root");
  }
  if (grammar == nullptr) {
    return Error(Errc::invalid_argument, "the grammar is not valid GBNF (llama.cpp's grammar format)").with_param("grammar");
  }
  if (g.lazy || g.prefill.empty()) return grammar;
  // The template already opened the answer: advance the grammar past that text's tokens. A
  // tokenizer that puts a space before the first piece (SentencePiece) made a token the text
  // does not have: it is skipped, as llama.cpp's common sampler does.
  std::vector<llama_token> toks(g.prefill.size() + 8);
  int32_t n = 0;
  const bool bound = !g.prefill_tokens.empty();
  try {
    if (bound) {
      toks = g.prefill_tokens;
      n = static_cast<int32_t>(toks.size());
    } else {
      n = llama_tokenize(vocab, g.prefill.c_str(), static_cast<int32_t>(g.prefill.size()), toks.data(),
                         static_cast<int32_t>(toks.size()), /*add_special=*/false, /*parse_special=*/true);
    }
    for (int32_t i = 0; i < n; ++i) {
      const llama_token t = toks[static_cast<size_t>(i)];
      if (i == 0 && !bound) {
        char piece[64];
        const int32_t len = llama_token_to_piece(vocab, t, piece, sizeof piece, 0, true);
        if (len > 0 && std::isspace(static_cast<unsigned char>(piece[0])) &&
            !std::isspace(static_cast<unsigned char>(g.prefill[0]))) {
          continue;
        }
      }
      llama_sampler_accept(grammar, t);
    }
  } catch (const std::exception& e) {
    llama_sampler_free(grammar);
    return Error(Errc::invalid_argument, std::string("the answer's grammar rejects the template's opening of the answer: ") + e.what())
        .with_param("response_format");
  }
  return grammar;
}

Status validate_grammar(const Model& model, const GrammarParams& g) {
  auto s = make_grammar(model, g);
  if (!s) return s.error();
  // The first token must be possible: a vocabulary without "{" (TinyStories-656K) can never start
  // a JSON answer, and would otherwise find that out on the engine thread.
  bool possible = g.lazy;
  if (!possible) {
    const llama_vocab* vocab = llama_model_get_vocab(model.handle());
    const int32_t n = llama_vocab_n_tokens(vocab);
    std::vector<llama_token_data> cand(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) cand[static_cast<size_t>(i)] = {i, 0.0f, 0.0f};
    llama_token_data_array arr{cand.data(), cand.size(), -1, false};
    llama_sampler_apply(*s, &arr);
    for (size_t i = 0; i < arr.size && !possible; ++i) possible = !std::isinf(arr.data[i].logit);
  }
  llama_sampler_free(*s);
  if (!possible) {
    return Error(Errc::invalid_argument,
                 "this model's vocabulary has no token that can start the answer the format requires")
        .with_param(g.prefill.empty() ? "grammar" : "response_format");
  }
  return {};
}

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
  if (!std::isfinite(p.presence_penalty) || std::fabs(p.presence_penalty) > 2.0f) {
    return bad("presence_penalty", "between -2 and 2");
  }
  if (!std::isfinite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 2.0f) {
    return bad("frequency_penalty", "between -2 and 2");
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (!std::isfinite(bias) || std::fabs(bias) > 100.0f) return bad("logit_bias", "between -100 and 100");
  }
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

  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= n_vocab) {
      return bad("logit_bias", "keyed by token ids of this model's vocabulary (0 to " + std::to_string(n_vocab - 1) + ")");
    }
  }
  llama_sampler* grammar = nullptr;
  if (!p.grammar.grammar.empty()) {
    auto g = make_grammar(model, p.grammar);
    if (!g) return g.error();
    grammar = *g;
  }

  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  llama_sampler* chain = llama_sampler_chain_init(cp);
  if (!p.logit_bias.empty()) {
    std::vector<llama_logit_bias> biases;
    for (const auto& [token, bias] : p.logit_bias) biases.push_back({token, bias});
    llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(biases.size()), biases.data()));
  }
  const bool penalise = (p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) &&
                        p.repeat_last_n > 0;
  if (penalise) {
    llama_sampler_chain_add(chain, llama_sampler_init_penalties(n_vocab, p.repeat_last_n, p.repeat_penalty,
                                                                p.frequency_penalty, p.presence_penalty));
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
  Sampler out(chain, seed, greedy && p.logit_bias.empty(), penalise ? p.repeat_last_n : 0);
  out.grammar_ = grammar;
  // Filtered by first-byte groups unless the grammar matches tokens by id (grammar_filter.h), where
  // the vocabulary is large enough for the groups' checks to cost less than filtering it whole.
  if (grammar != nullptr && n_vocab >= kMinVocabToGroup && !grammar_has_tokens(p.grammar.grammar)) {
    out.first_bytes_ = &model.first_bytes();
  }
  return out;
}

Sampler::Sampler(Sampler&& o) noexcept
    : chain_(std::exchange(o.chain_, nullptr)),
      grammar_(std::exchange(o.grammar_, nullptr)),
      candidates_(std::move(o.candidates_)),
      first_bytes_(o.first_bytes_),
      seed_(o.seed_),
      greedy_(o.greedy_),
      history_(o.history_) {}

Sampler& Sampler::operator=(Sampler&& o) noexcept {
  if (this != &o) {
    if (chain_ != nullptr) llama_sampler_free(chain_);
    if (grammar_ != nullptr) llama_sampler_free(grammar_);
    chain_ = std::exchange(o.chain_, nullptr);
    grammar_ = std::exchange(o.grammar_, nullptr);
    candidates_ = std::move(o.candidates_);
    first_bytes_ = o.first_bytes_;
    seed_ = o.seed_;
    greedy_ = o.greedy_;
    history_ = o.history_;
  }
  return *this;
}

Sampler::~Sampler() {
  if (chain_ != nullptr) llama_sampler_free(chain_);
  if (grammar_ != nullptr) llama_sampler_free(grammar_);
}

namespace {

// log-probabilities of `token` and the top_n most likely tokens, from raw logits.
void fill_logprobs(const float* logits, int32_t n_vocab, Token token, int32_t top_n, TokenLogprob& out) {
  float max = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n_vocab; ++i) max = std::max(max, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max));
  const float log_z = max + static_cast<float>(std::log(sum));
  out.token = token;
  out.logprob = token >= 0 && token < n_vocab ? logits[token] - log_z : -std::numeric_limits<float>::infinity();
  out.top.clear();
  top_n = std::min(top_n, n_vocab);
  if (top_n <= 0) return;
  std::vector<Token> ids(static_cast<size_t>(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i) ids[static_cast<size_t>(i)] = i;
  std::partial_sort(ids.begin(), ids.begin() + top_n, ids.end(),
                    [logits](Token a, Token b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  for (int32_t i = 0; i < top_n; ++i) {
    const Token t = ids[static_cast<size_t>(i)];
    out.top.emplace_back(t, logits[t] - log_z);
  }
}

}  // namespace

// Greedy under a grammar, exactly as "filter every candidate, then take the first maximum" but
// without walking the grammar over the whole vocabulary: the tokens in order of logit (ties: lower
// id first, as llama.cpp's greedy sampler breaks them), each checked alone, the first allowed one
// taken. Only when none of the most likely kOrderedChecks is allowed does the full filter run.
// nullopt: the full filter decides (a dead end included).
bool Sampler::allowed(Token t) {
  llama_token_data one{t, 1.0f, 0.0f};
  llama_token_data_array single{&one, 1, -1, false};
  llama_sampler_apply(grammar_, &single);
  return !(std::isinf(one.logit) && one.logit < 0);
}

// The grammar's filter over `cur` (every token of the vocabulary, data[i].id == i): what it rejects
// gets -inf. By first-byte groups where that is exact (grammar_filter.h): a group whose one-byte
// token is rejected is rejected whole, the grammar walks only the others.
void Sampler::filter(llama_token_data_array& cur) {
  if (first_bytes_ == nullptr) {
    llama_sampler_apply(grammar_, &cur);
    return;
  }
  constexpr float kNo = -std::numeric_limits<float>::infinity();
  survivors_.resize(cur.size * sizeof(llama_token_data));
  auto* kept = reinterpret_cast<llama_token_data*>(survivors_.data());
  std::size_t n = 0;
  for (std::size_t b = 0; b < 256; ++b) {
    const auto& group = first_bytes_->by_byte[b];
    if (group.empty()) continue;
    // A check costs about what filtering a few tokens does: small groups are filtered as they are.
    const Token one = group.size() >= kMinGroupToCheck ? first_bytes_->single[b] : -1;
    if (one >= 0 && !allowed(one)) {
      for (Token t : group) cur.data[t].logit = kNo;
      continue;
    }
    for (Token t : group) kept[n++] = cur.data[t];
  }
  for (Token t : first_bytes_->always) kept[n++] = cur.data[t];
  llama_token_data_array s{kept, n, -1, false};
  llama_sampler_apply(grammar_, &s);
  for (std::size_t i = 0; i < n; ++i) cur.data[kept[i].id].logit = kept[i].logit;
}

std::optional<Token> Sampler::greedy_constrained(const float* logits, int32_t n_vocab) {
  Token best = 0;
  for (int32_t i = 1; i < n_vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  if (allowed(best)) return best;
  // On a small vocabulary the whole filter costs about what a few checks do.
  if (n_vocab < kMinVocabToGroup) return std::nullopt;
  constexpr int32_t kOrderedChecks = 16;
  const int32_t k = std::min(kOrderedChecks, n_vocab);
  order_.resize(static_cast<size_t>(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i) order_[static_cast<size_t>(i)] = i;
  std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), [logits](Token a, Token b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int32_t i = 0; i < k; ++i) {
    const Token t = order_[static_cast<size_t>(i)];
    if (t != best && allowed(t)) return t;
  }
  return std::nullopt;
}

Token Sampler::sample_constrained(const float* logits, int32_t n_vocab) {
  if (greedy_ && history_ == 0) {
    if (auto t = greedy_constrained(logits, n_vocab)) {
      llama_sampler_accept(grammar_, *t);
      return *t;
    }
  }
  candidates_.resize(static_cast<size_t>(n_vocab) * sizeof(llama_token_data));
  auto* data = reinterpret_cast<llama_token_data*>(candidates_.data());
  const auto fill = [&] {
    for (int32_t i = 0; i < n_vocab; ++i) data[i] = llama_token_data{i, logits[i], 0.0f};
    return llama_token_data_array{data, static_cast<size_t>(n_vocab), -1, false};
  };
  // First the chain alone; the grammar checks only the token it picked.
  llama_token_data_array cur = fill();
  llama_sampler_apply(chain_, &cur);
  Token t = cur.selected >= 0 ? cur.data[cur.selected].id : 0;
  llama_token_data one{t, 1.0f, 0.0f};
  llama_token_data_array single{&one, 1, -1, false};
  llama_sampler_apply(grammar_, &single);
  if (std::isinf(one.logit) && one.logit < 0) {
    // Rejected: the grammar filters every candidate, and the chain draws again.
    cur = fill();
    filter(cur);
    bool any = false;
    for (size_t i = 0; i < cur.size && !any; ++i) any = !std::isinf(cur.data[i].logit);
    // A dead end: the vocabulary has no token the grammar allows here. Accepting anything would
    // throw inside llama.cpp (on the engine thread); the caller ends the answer instead.
    if (!any) return kNoToken;
    llama_sampler_apply(chain_, &cur);
    t = cur.selected >= 0 ? cur.data[cur.selected].id : 0;
  }
  llama_sampler_accept(grammar_, t);
  llama_sampler_accept(chain_, t);
  return t;
}

Token Sampler::sample(Context& ctx, int32_t batch_index, TokenLogprob* logprobs, int32_t top_n) {
  const float* raw = logprobs != nullptr || grammar_ != nullptr ? ctx.logits(batch_index) : nullptr;
  const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(ctx.model().handle()));
  Token t;
  if (grammar_ != nullptr && raw != nullptr) {
    t = sample_constrained(raw, n_vocab);
  } else {
    t = sample_plain(ctx, batch_index);
  }
  if (logprobs != nullptr && raw != nullptr) fill_logprobs(raw, n_vocab, t, top_n, *logprobs);
  return t;
}

Token Sampler::sample_plain(Context& ctx, int32_t batch_index) {
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
