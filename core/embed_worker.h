// The embed thread's work (llmd-embed, a TaskThread the daemon owns): an embeddings request's
// inputs become tokens and then vectors, on an engine::Embedder created the first time one is
// asked for, so a daemon that never embeds never allocates one. The engine thread is never held:
// the Embedder has its own llama_context on the shared Model.
//
// Thread-safety: run() is called on the embed thread only (one request at a time); the
// constructor and created() on any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "common/result.h"
#include "engine/embedder.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace llmd::core {

struct EmbedConfig {
  std::uint32_t n_ctx = 512;  // the longest input in tokens (engine::embedding_context_size)
  std::int32_t threads = 0;   // the daemon's `threads` (0: one per CPU)
  std::uint32_t n_seq_max = 32;
};

// One input: text (tokenized as llama-server does: the model's BOS/EOS added, control-token text
// parsed) or token ids used as they are.
using EmbedInput = std::variant<std::string, std::vector<engine::Token>>;

struct EmbedRequest {
  std::vector<EmbedInput> inputs;
};

struct EmbedResult {
  std::vector<std::vector<float>> vectors;  // one per input, in order, L2-normalized
  std::uint64_t prompt_tokens = 0;          // every input's tokens
};

// What run() enforces on a whole request's tokens (ServiceLimits' embed limits).
struct EmbedTokenLimits {
  std::uint64_t max_tokens = 0;         // all inputs together: invalid_argument, param "input"; 0: none
  std::uint64_t max_prompt_tokens = 0;  // max-prompt-tokens: resource_exhausted (over_limit); 0: none
};

class EmbedWorker {
 public:
  EmbedWorker(const engine::Model& model, const engine::Tokenizer& tokenizer, EmbedConfig config)
      : model_(model), tok_(tokenizer), config_(config) {}

  // Tokenizes and embeds. Errors: invalid_argument with param "input" (an empty input or text, text
  // that is not UTF-8, a token id outside the vocabulary, more tokens than the limits allow; an
  // input longer than n_ctx: Reason::context_length_exceeded), resource_exhausted (max-prompt-tokens),
  // cancelled, and what creating the Embedder met (resource_exhausted, unsupported: a reranker).
  Result<EmbedResult> run(const EmbedRequest& request, const EmbedTokenLimits& limits,
                          const std::atomic<bool>* cancel);

  const EmbedConfig& config() const { return config_; }
  bool created() const { return created_.load(std::memory_order_relaxed); }

 private:
  const engine::Model& model_;
  const engine::Tokenizer& tok_;
  const EmbedConfig config_;
  std::unique_ptr<engine::Embedder> embedder_;  // embed thread only; made by the first run()
  std::atomic<bool> created_{false};
};

}  // namespace llmd::core
