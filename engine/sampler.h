// A per-request sampler chain: repetition penalty, top-k, top-p, min-p, temperature, then a seeded
// draw; temperature 0 means greedy (the most likely token, no randomness).
//
// Thread-safety: one Sampler per request, used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "common/result.h"
#include "engine/model.h"
#include "engine/types.h"

struct llama_sampler;

namespace llmd::engine {

class Context;

struct SamplingParams {
  float temperature = 0.8f;      // 0 = greedy; [0, 100]
  std::int32_t top_k = 40;       // 0 = off
  float top_p = 0.95f;           // (0, 1]; 1 = off
  float min_p = 0.05f;           // [0, 1]; 0 = off
  float repeat_penalty = 1.0f;   // (0, 10]; 1 = off
  std::int32_t repeat_last_n = 64;  // tokens the penalty looks back over; [0, 65536]
  std::optional<std::uint32_t> seed;  // unset = a random seed (reported by Sampler::seed())
};

// invalid_argument naming the field for out-of-range or non-finite values.
Status validate_sampling(const SamplingParams& params);

class Sampler {
 public:
  static Result<Sampler> create(const Model& model, const SamplingParams& params);

  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;
  ~Sampler();

  // Picks the next token from the logits at batch index i of ctx's last decode, and records it in
  // the sampler's history (for the repetition penalty).
  Token sample(Context& ctx, std::int32_t batch_index);
  // Records tokens the model was given (the prompt), so the repetition penalty sees them.
  void accept(std::span<const Token> tokens);

  std::uint32_t seed() const { return seed_; }
  bool greedy() const { return greedy_; }

 private:
  Sampler(llama_sampler* chain, std::uint32_t seed, bool greedy, std::int32_t history)
      : chain_(chain), seed_(seed), greedy_(greedy), history_(history) {}

  llama_sampler* chain_ = nullptr;
  std::uint32_t seed_ = 0;
  bool greedy_ = false;
  std::int32_t history_ = 0;  // tokens of prompt history worth accepting
};

}  // namespace llmd::engine
