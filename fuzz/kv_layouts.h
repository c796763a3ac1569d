// The KV layouts the binary-format fuzz targets decode against (fuzz_chunk, fuzz_seq_state's
// writer check): stories260K's real ones in the configurations llmd runs with. llmd-fuzz-corpus
// checks them against the model's contexts when it regenerates the seeds, so a change in
// llama.cpp or the model shows up there, not as a silently unrealistic fuzz target.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/seq_state.h"

namespace llmd::fuzz {

struct KvLayoutConfig {
  const char* name;
  bool flash_attn;  // off: V is stored transposed
  // True: a context of the model has this layout (llmd-fuzz-corpus checks it). False: the model's
  // heads (8 dimensions) are too small for a quantized KV cache (llama.cpp wants a block of 32 per
  // head), so the q8_0 layout is the f16 one re-typed, its states the model's f16 KV converted.
  bool from_model;
};

inline std::vector<KvLayoutConfig> kv_layout_configs() {
  return {{"f16-vtrans", false, true}, {"f16", true, true}, {"q8_0", true, false}};
}

// stories260K: 5 layers, 4 KV heads of 8 dimensions (32 elements per row).
inline std::vector<engine::KvLayout> kv_layouts() {
  constexpr std::uint32_t kLayers = 5;
  constexpr std::int32_t kF16 = 1, kQ8_0 = 8;  // ggml_type values
  auto make = [&](bool v_trans, std::int32_t type, std::uint64_t row_bytes, std::uint32_t elem_bytes) {
    engine::KvLayout l;
    l.n_layer = kLayers;
    l.v_trans = v_trans;
    l.k_type.assign(kLayers, type);
    l.v_type.assign(kLayers, type);
    l.k_row_bytes.assign(kLayers, row_bytes);
    l.v_row_bytes.assign(kLayers, row_bytes);
    if (v_trans) l.v_elem_bytes.assign(kLayers, elem_bytes);
    return l;
  };
  return {make(true, kF16, 64, 2), make(false, kF16, 64, 0), make(false, kQ8_0, 34, 0)};
}

}  // namespace llmd::fuzz
