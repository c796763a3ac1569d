// Teacher-forcing measures (see lm_eval.h).
#include "bench/lm_eval.h"

#include <algorithm>
#include <cmath>

#include "engine/batch.h"

namespace llmd::bench {

// Tokens greedy generation may pick: not end-of-generation, not control tokens (BOS, UNK: they
// render as nothing), so that every story runs on through the whole history and continuation.
std::vector<bool> story_tokens(const engine::Tokenizer& tok) {
  std::vector<bool> ok(static_cast<std::size_t>(tok.n_vocab()));
  for (engine::Token t = 0; t < tok.n_vocab(); ++t) {
    ok[static_cast<std::size_t>(t)] = !tok.is_eog(t) && !tok.piece(t).empty();
  }
  return ok;
}

// Index of the largest logit among the allowed tokens.
engine::Token greedy(const float* logits, const std::vector<bool>& allowed) {
  engine::Token best = -1;
  for (engine::Token t = 0; t < static_cast<engine::Token>(allowed.size()); ++t) {
    if (allowed[static_cast<std::size_t>(t)] && (best < 0 || logits[t] > logits[best])) best = t;
  }
  return best;
}

engine::Token argmax(const float* logits, int n) {
  return static_cast<engine::Token>(std::max_element(logits, logits + n) - logits);
}

// Decodes tokens into seq from position first; logits for every token or only the last.
Status feed(engine::Context& ctx, const std::vector<engine::Token>& tokens, engine::Pos first, engine::SeqId seq,
            bool all_logits) {
  engine::Batch batch(static_cast<std::int32_t>(tokens.size()));
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    batch.add(tokens[i], first + static_cast<engine::Pos>(i), seq, all_logits || i + 1 == tokens.size());
  }
  return ctx.decode(batch);
}

// KL(P || Q) of two logit vectors over the full softmax, in double.
double kl_divergence(const float* p, const float* q, int n) {
  const double mp = *std::max_element(p, p + n), mq = *std::max_element(q, q + n);
  double sp = 0.0, sq = 0.0;
  for (int i = 0; i < n; ++i) {
    sp += std::exp(static_cast<double>(p[i]) - mp);
    sq += std::exp(static_cast<double>(q[i]) - mq);
  }
  const double lp0 = mp + std::log(sp), lq0 = mq + std::log(sq);
  double kl = 0.0;
  for (int i = 0; i < n; ++i) {
    const double lp = p[i] - lp0, lq = q[i] - lq0;
    kl += std::exp(lp) * (lp - lq);
  }
  return kl;
}

double log_prob(const float* logits, int n, engine::Token token) {
  const double m = *std::max_element(logits, logits + n);
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += std::exp(static_cast<double>(logits[i]) - m);
  return static_cast<double>(logits[token]) - (m + std::log(s));
}

}  // namespace llmd::bench
