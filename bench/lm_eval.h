// Small tools for measuring a language model's output against a reference, shared by the
// scenarios that teacher-force tokens (quality, window): greedy choice over allowed tokens,
// argmax, KL divergence and log-probabilities over the full softmax, and feeding tokens.
#pragma once

#include <vector>

#include "common/result.h"
#include "engine/context.h"
#include "engine/tokenizer.h"

namespace llmd::bench {

// Tokens greedy generation may pick: not end-of-generation, not control tokens (BOS, UNK: they
// render as nothing), so that every story runs on through the whole text.
std::vector<bool> story_tokens(const engine::Tokenizer& tok);
// Index of the largest logit among the allowed tokens.
engine::Token greedy(const float* logits, const std::vector<bool>& allowed);
engine::Token argmax(const float* logits, int n);
// Decodes tokens into seq from position first; logits for every token or only the last.
Status feed(engine::Context& ctx, const std::vector<engine::Token>& tokens, engine::Pos first, engine::SeqId seq,
            bool all_logits);
// KL(P || Q) of two logit vectors over the full softmax, in double.
double kl_divergence(const float* p, const float* q, int n);
// log P(token) under the full softmax of the logits, in double.
double log_prob(const float* logits, int n, engine::Token token);

}  // namespace llmd::bench
