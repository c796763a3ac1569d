// Embeddings of whole inputs (OpenAI's /v1/embeddings), computed as llama-server computes them: a
// llama_context of its own on the loaded Model with `embeddings = true`, pooled per sequence with
// the model's pooling type (mean where the model names none, as a chat model does), each vector
// L2-normalized.
//
// Pooling needs every token of a sequence in one micro-batch (llama.cpp pools per ubatch, and a
// model without causal attention cannot be split at all), so n_batch = n_ubatch = n_ctx: the
// longest input is n_ctx() tokens, and several inputs share one llama_decode while their tokens fit
// n_group_tokens together (and n_seq_max of them), else they go in turns. The KV pool (for models that
// keep one) is cleared after every decode: nothing is reused between inputs.
//
// A vector does not depend on which inputs share its decode: attention runs without flash
// attention over f32 K and V. (ggml's CPU flash attention takes a kernel that rounds Q to f16 and
// sums V in f16 for micro-batches under 64 rows and an f32 one above, so the same text came out up
// to 3e-3 apart alone and in a batch; unfused attention in f32 agrees within 1e-5.) The price:
// memory for the attention scores (embedding_context_size), and time that grows with the square of
// a decode's tokens (n_group_tokens).
//
// Thread-safety: an Embedder is used by one thread at a time (in the daemon: the embed thread,
// llmd-embed); it may run while another thread decodes on a Context of the same Model. The Model
// must outlive it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/model.h"
#include "engine/types.h"

struct llama_context;
struct ggml_threadpool;

namespace llmd::engine {

struct EmbedderParams {
  std::uint32_t n_ctx = 512;      // the longest input in tokens, and the most tokens one decode takes
  std::uint32_t n_seq_max = 32;   // inputs decoded together in one llama_decode, at most
  std::int32_t n_threads = 0;     // 0 = one per CPU (default_thread_count)
  // Tokens of several inputs decoded together, at most (a longer input goes alone). Unfused
  // attention scores every token of a decode against every other, the other inputs' masked ones
  // included, so a decode's attention costs the square of all its tokens. 64 inputs of ~27
  // tokens, 1 thread, embeddings/s in one decode / groups of 512 / 128 tokens / one by one:
  // stories260K 45 / 177 / 289 / 273, the smollm2-135m shape 5 / 9 / 8 / 8. On a CPU a bigger
  // group buys little beyond fewer calls.
  std::uint32_t n_group_tokens = 256;
};

// What an Embedder of n_ctx tokens needs beyond the weights, estimated: the attention scores of a
// full micro-batch (n_head x n_ctx x n_ctx f32), the f32 KV of n_ctx tokens, and the logits
// llama.cpp keeps for every output token of a model with an output head (n_vocab f32 per token:
// an embeddings context outputs them all, as llama-server's does).
std::uint64_t embedder_bytes(const ModelInfo& model, std::uint32_t n_ctx);
// The embedder context for a model: the largest n_ctx <= limit (a multiple of 256, or limit
// itself) whose embedder_bytes fit budget_bytes; at least min(limit, 256). E.g. 768 tokens for a
// 1B chat model with a 128k vocabulary in 512 MiB, 1792 for a BERT-base-sized embedding model.
std::uint32_t embedding_context_size(const ModelInfo& model, std::uint32_t limit, std::uint64_t budget_bytes);

// How one sequence's token vectors become one vector (llama.cpp's pooling types).
enum class Pooling { mean, cls, last };
std::string_view pooling_name(Pooling pooling);
// The pooling the model's GGUF names ("mean", "cls", "last", "rank"), "" where it names none (a
// chat model: the Embedder pools it by mean).
std::string model_pooling(const Model& model);

class Embedder {
 public:
  // Creates the context. Errors: invalid_argument (params: n_ctx 16..kMaxContext, n_seq_max
  // 1..llama's most parallel sequences, threads 0..kMaxThreads), unsupported (a reranking model:
  // its pooling gives scores, not vectors), resource_exhausted (llama.cpp could not allocate it).
  static Result<std::unique_ptr<Embedder>> create(const Model& model, const EmbedderParams& params);

  ~Embedder();
  Embedder(const Embedder&) = delete;
  Embedder& operator=(const Embedder&) = delete;

  // One L2-normalized vector of n_embd() floats per input, in the inputs' order. Each input is
  // 1..n_ctx() valid token ids, used as they are (the caller adds BOS/EOS: Tokenizer::tokenize
  // with add_special). A vector does not depend on which inputs share its decode (within float
  // rounding). Errors: invalid_argument with param "input" (an empty input, an id outside the
  // vocabulary; longer than n_ctx(): Reason::context_length_exceeded with limit n_ctx() and the
  // input's length), cancelled (*cancel became true: checked before each decode and by llama.cpp
  // during one), internal (llama.cpp failed).
  Result<std::vector<std::vector<float>>> embed(std::span<const std::vector<Token>> inputs,
                                                const std::atomic<bool>* cancel = nullptr);

  std::int32_t n_embd() const { return n_embd_; }
  std::uint32_t n_ctx() const { return n_ctx_; }
  std::uint32_t n_seq_max() const { return n_seq_max_; }
  std::uint32_t n_group_tokens() const { return n_group_tokens_; }
  std::int32_t n_threads() const { return n_threads_; }
  Pooling pooling() const { return pooling_; }
  // The model names its own pooling (an embedding model); false: mean pooling of a model that
  // names none (a chat model's vectors, for rough similarity only).
  bool model_pooling() const { return model_pooling_; }

 private:
  Embedder(const Model& model, llama_context* ctx) : model_(model), ctx_(ctx) {}
  // Decodes the group's inputs together (their tokens fit n_ctx(), at most n_seq_max() of them) and
  // appends their normalized vectors to out.
  Status decode_group(std::span<const std::vector<Token>> group, std::vector<std::vector<float>>& out);

  const Model& model_;
  llama_context* ctx_;
  ggml_threadpool* pool_ = nullptr;
  const std::atomic<bool>* cancel_ = nullptr;  // during embed(): read by llama.cpp's abort callback
  std::int32_t n_embd_ = 0, n_threads_ = 0, n_vocab_ = 0;
  std::uint32_t n_ctx_ = 0, n_seq_max_ = 0, n_group_tokens_ = 0;
  Pooling pooling_ = Pooling::mean;
  bool model_pooling_ = false;
};

}  // namespace llmd::engine
