// A per-request sampler chain: logit bias, repetition/presence/frequency penalties, top-k, top-p,
// min-p, temperature, then a seeded draw; temperature 0 means greedy (the most likely token, no
// randomness). A grammar (llama.cpp's GBNF) constrains what may be drawn: the token the chain
// picks is checked against it, and only when the grammar rejects it are all candidates filtered
// and the draw made again (as llama.cpp's common sampler does: one grammar check per token
// instead of one per vocabulary entry). Log-probabilities, when asked for, are the model's own
// (a softmax of the raw logits, before bias, penalties and grammar), as llama-server reports them.
//
// Thread-safety: one Sampler per request, used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "engine/model.h"
#include "engine/types.h"

struct llama_sampler;
struct llama_token_data_array;

namespace llmd::engine {

class Context;

// A grammar the answer must follow (empty: none).
struct GrammarParams {
  std::string grammar;  // GBNF, root rule "root"
  bool lazy = false;    // only from a trigger on (tools the model may or may not call)
  std::vector<std::string> trigger_patterns;  // regexes (lazy)
  std::vector<Token> trigger_tokens;          // (lazy)
  // Text the grammar starts with that the prompt already holds (a chat template's opening of the
  // answer): fed through the grammar before the first token is sampled.
  std::string prefill;
  // The prompt's tokens that spell `prefill` (bind_prefill, engine/chat_template.h); empty: the
  // prefill is tokenized alone.
  std::vector<Token> prefill_tokens;
};

struct SamplingParams {
  float temperature = 0.8f;      // 0 = greedy; [0, 2] on the OpenAI endpoints ([0, 100] here)
  std::int32_t top_k = 40;       // 0 = off
  float top_p = 0.95f;           // (0, 1]; 1 = off
  float min_p = 0.05f;           // [0, 1]; 0 = off
  float repeat_penalty = 1.0f;   // (0, 10]; 1 = off
  float presence_penalty = 0.0f;   // [-2, 2]; OpenAI's: subtracted once from a token seen before
  float frequency_penalty = 0.0f;  // [-2, 2]; OpenAI's: subtracted per time a token was seen
  std::int32_t repeat_last_n = 64;  // tokens the penalties look back over; [0, 65536]
  std::vector<std::pair<Token, float>> logit_bias;  // added to a token's logit; [-100, 100]
  GrammarParams grammar;
  std::optional<std::uint32_t> seed;  // unset = a random seed (reported by Sampler::seed())
};

inline constexpr std::int32_t kMaxTopLogprobs = 20;

// Whether a Sampler could be made with this grammar for this model: invalid_argument (param
// "grammar") for GBNF llama.cpp cannot parse, or (param "response_format") a prefill the grammar
// rejects. Checked before a request is queued, so the engine never finds it.
Status validate_grammar(const Model& model, const GrammarParams& grammar);

// A sampled token's log-probability and the most likely alternatives at that step.
struct TokenLogprob {
  Token token = -1;
  float logprob = 0;
  std::vector<std::pair<Token, float>> top;  // by logprob, most likely first
};

// invalid_argument naming the field for out-of-range or non-finite values.
Status validate_sampling(const SamplingParams& params);

// engine-internal: a grammar sampler for `grammar`, advanced past its prefill.
Result<llama_sampler*> make_grammar(const Model& model, const GrammarParams& grammar);

class Sampler {
 public:
  // invalid_argument for bad parameters or a grammar llama.cpp cannot parse (or whose prefill it
  // rejects).
  static Result<Sampler> create(const Model& model, const SamplingParams& params);

  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;
  ~Sampler();

  // Picks the next token from the logits at batch index i of ctx's last decode, and records it in
  // the sampler's history (for the penalties) and the grammar. With `logprobs`, also fills in the
  // token's log-probability and the `top_n` most likely tokens. kNoToken when the grammar allows
  // no token of the vocabulary (a dead end: the answer cannot go on).
  Token sample(Context& ctx, std::int32_t batch_index, TokenLogprob* logprobs = nullptr, std::int32_t top_n = 0);
  // Records tokens the model was given (the prompt), so the repetition penalty sees them.
  void accept(std::span<const Token> tokens);

  std::uint32_t seed() const { return seed_; }
  bool greedy() const { return greedy_; }

 private:
  Sampler(llama_sampler* chain, std::uint32_t seed, bool greedy, std::int32_t history)
      : chain_(chain), seed_(seed), greedy_(greedy), history_(history) {}

  Token sample_constrained(const float* logits, std::int32_t n_vocab);
  std::optional<Token> greedy_constrained(const float* logits, std::int32_t n_vocab);
  bool allowed(Token t);                    // the grammar takes token t next
  void filter(llama_token_data_array& cur);  // the grammar's filter over the whole vocabulary
  Token sample_plain(Context& ctx, std::int32_t batch_index);

  llama_sampler* chain_ = nullptr;
  llama_sampler* grammar_ = nullptr;  // owned; null: no grammar
  std::vector<std::uint8_t> candidates_;  // reused llama_token_data storage
  std::vector<Token> order_;              // reused: token ids in logit order (greedy_constrained)
  const FirstByteIndex* first_bytes_ = nullptr;  // the model's; null: filter the whole vocabulary
  std::vector<std::uint8_t> survivors_;          // reused llama_token_data storage (filter)
  std::uint32_t seed_ = 0;
  bool greedy_ = false;
  std::int32_t history_ = 0;  // tokens of prompt history worth accepting
};

}  // namespace llmd::engine
