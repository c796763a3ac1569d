// Generated models: llama-architecture GGUF files with seeded random weights in the shapes of real
// models, for tests (tiny) and performance work (speed depends on shape, not on weights). The
// tokenizer is copied from one of the vocabulary-only GGUF files that ship in the llama.cpp
// source tree (models/ggml-vocab-*.gguf), so prompts tokenize as they would for the real model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"

namespace llmd::engine {

struct ModelShape {
  std::string name;
  std::int32_t n_embd = 0;
  std::int32_t n_layer = 0;
  std::int32_t n_head = 0;
  std::int32_t n_head_kv = 0;
  std::int32_t n_ff = 0;
  std::int32_t n_ctx_train = 0;
  float rope_freq_base = 10000.0f;
  std::string vocab;          // vocabulary file in llama.cpp's models/, e.g. "ggml-vocab-llama-spm.gguf"
  std::string chat_template;  // empty: the model has none
};

// tiny, smollm2-135m, llama-3.2-1b.
const std::vector<ModelShape>& model_shapes();

struct GenerateModelParams {
  std::string shape;          // a name from model_shapes()
  std::string type = "q8_0";  // weight type of the matrices: f16, q8_0 or q4_0 (norms stay f32)
  std::string out;            // output file; written to out + ".tmp" and renamed when complete
  std::string vocab_dir;      // llama.cpp's models/ directory
  std::uint64_t seed = 42;
};

// Progress: (bytes of tensor data written, bytes in total).
using ModelGenProgress = std::function<void(std::uint64_t, std::uint64_t)>;

// Errors: invalid_argument (unknown shape or type), not_found (vocabulary file), io_error.
// The same parameters always produce the same bytes.
Status write_random_model(const GenerateModelParams& params, const ModelGenProgress& progress = {});

}  // namespace llmd::engine
