// A loaded GGUF model: weights, vocabulary and the facts the rest of llmd needs about it.
//
// Thread-safety: a Model is immutable after load(); any number of threads may read it and create
// contexts from it. It must outlive every Context, Tokenizer and Sampler made from it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "engine/grammar_filter.h"

struct llama_model;            // engine-internal handles; only engine/ sees their definitions
struct common_chat_templates;

namespace llmd::engine {

struct ModelParams {
  std::string path;
  int n_gpu_layers = -1;  // layers to offload to a GPU backend; -1 = all (ignored without one)
  bool use_mmap = true;
};

struct ModelInfo {
  std::string path;
  std::string architecture;      // general.architecture, e.g. "llama"
  std::string name;              // general.name (may be empty)
  std::string description;       // llama.cpp's one-line description, e.g. "llama 1B Q8_0"
  std::string file_type;         // e.g. "Q8_0", "all F32"
  std::uint64_t file_size = 0;   // bytes on disk
  // Identity of the weights and tokenizer: size + FNV-1a of the file's first MiB (header, metadata,
  // vocabulary and the first tensors). Stored with sessions: tokens made with another fingerprint
  // are re-derived from the messages.
  std::string fingerprint;
  std::uint64_t n_params = 0;
  std::int32_t n_layer = 0;
  std::int32_t n_embd = 0;
  std::int32_t n_head = 0;
  std::int32_t n_head_kv = 0;
  std::int32_t n_embd_head_k = 0;  // per-head key width
  std::int32_t n_embd_head_v = 0;  // per-head value width
  std::int32_t n_ctx_train = 0;    // training context length
  std::int32_t n_vocab = 0;
  bool has_chat_template = false;
  std::string chat_template;       // the model's own template text (empty if none)
  // The template llmd renders with: the model's, or ChatML when it has none or llama.cpp's Jinja
  // engine cannot parse it (chat_template_error says why).
  bool chat_template_fallback = true;
  std::string chat_template_error;
  bool chat_template_tool_calls = false;  // the template renders tool calls (else: llmd's generic format)
  // KV cache bytes one token costs at f16 K and V over all layers.
  std::uint64_t kv_bytes_per_token_f16 = 0;
  // Whether llmd can cut this model's per-sequence KV state into per-token rows (plain attention
  // KV cache: not recurrent, not hybrid, no sliding window, no extended cell metadata).
  bool supports_seq_state = false;
  std::uint32_t seq_state_cell_ext_bytes = 0;  // extra bytes per cell in the state format
};

class Model {
 public:
  // Loads the model. Every failure is an Error, never a crash: a missing, empty, truncated or
  // non-GGUF file (see probe_gguf), an architecture llama.cpp does not know (unsupported), or a
  // file llama.cpp rejects (its reason is included in the message).
  static Result<std::unique_ptr<Model>> load(const ModelParams& params);

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelInfo& info() const { return info_; }

  // KV bytes per token for the given ggml K/V type names ("f16", "q8_0", ...); 0 if unknown.
  std::uint64_t kv_bytes_per_token(const std::string& type_k, const std::string& type_v) const;

  llama_model* handle() const { return model_; }  // engine-internal
  common_chat_templates* chat_templates() const { return templates_; }  // engine-internal
  const FirstByteIndex& first_bytes() const { return first_bytes_; }      // engine-internal (sampler)

 private:
  Model(llama_model* model, ModelInfo info) : model_(model), info_(std::move(info)) {}

  llama_model* model_;
  ModelInfo info_;
  common_chat_templates* templates_ = nullptr;  // owned
  FirstByteIndex first_bytes_;  // the vocabulary by first byte (grammar_filter.h), built at load
};

}  // namespace llmd::engine
