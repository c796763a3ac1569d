// Tolerance policies: which codec each chunk of a session is kept in (in T1 and T2; a resident
// slot always holds the context's own KV type).
//
// A policy scores each chunk's importance (how much later tokens depend on it) and picks codecs so
// that the session's encoded bytes stay under a target ratio of its exact bytes, compressing the
// least important chunks hardest (LLMS: "tolerance-aware compression"). Protected chunks — the
// first `sink_chunks` (attention sinks) and the last `recent_chunks` (the recent window) — are
// always exact.
//
//   exact      every chunk exact (bit-identical restore; the default)
//   position   a tolerance ladder (exact, then the ladder's codecs: kivi8, kivi4, kivi2 by
//              default) with importance from position alone: sinks and the recent window exact,
//              older chunks compressed harder until the target ratio holds
//   attention  like position, but importance is the attention each chunk received (the engine's
//              AttentionProbe, flash attention off), falling back to position when none was seen
//   q8_0, q4_0, kivi8, kivi4, kivi2
//              every unprotected chunk in that codec (measurement baselines)
//
// The ladder is solved for the target, not cut at fixed thresholds: starting from all exact, the
// step taken next is the one demotion (a chunk one rung down) that adds the least importance-
// weighted error per byte saved, error modelled as the codec's relative quantization variance
// (codec_distortion); so chunks that receive little attention go to 2 bits while important ones
// stay at 8, and a uniform step down wins when importances are alike.
//
// Pure code; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "kvstore/chunk.h"

namespace llmd::kvstore {

enum class PolicyKind { exact, position, attention, q8_0, q4_0, kivi8, kivi4, kivi2 };

std::string_view policy_name(PolicyKind kind);
Result<PolicyKind> policy_from_name(std::string_view name);  // invalid_argument, naming the choices

struct PolicyParams {
  PolicyKind kind = PolicyKind::exact;
  double target_ratio = 0.5;       // encoded bytes / exact bytes the position policy aims for
  std::uint32_t sink_chunks = 1;   // first chunks kept exact
  std::uint32_t recent_chunks = 2;  // last chunks kept exact
  // The rungs below exact for position and attention, finest first.
  std::vector<Codec> ladder = {Codec::kivi8, Codec::kivi4, Codec::kivi2};
};

using CodecRatios = std::array<double, kNumCodecs>;

// Encoded size of each codec relative to exact (payload bytes, cell positions included), for a
// layout and chunks of chunk_tokens cells (index: Codec value). A codec the layout cannot use
// (rows not a whole number of its blocks) gets ratio 0 and is never chosen.
CodecRatios codec_ratios(const engine::KvLayout& layout, std::uint32_t chunk_tokens);

// The relative quantization variance a codec adds (0 for exact): ((2^bits - 1))^-2 of its levels.
double codec_distortion(Codec codec);

// Position-based importance of chunk i of n: 1 for protected chunks, else decreasing with age
// (distance from the end), in (0, 1).
std::vector<float> position_importance(std::size_t n_chunks, const PolicyParams& params);

// Chunk importance from per-position attention (the mean over each chunk's positions); empty if
// the positions do not cover all n_cells (then the caller falls back to position_importance).
std::vector<float> attention_chunk_importance(std::span<const float> per_position, std::size_t n_cells,
                                              std::uint32_t chunk_tokens);

// The codec for each of n chunks with the given importance scores (same length). Chunks of equal
// importance are compressed oldest first.
std::vector<Codec> choose_codecs(const PolicyParams& params, std::span<const float> importance,
                                 const CodecRatios& ratios);

// How tolerant a codec's chunks are of compression, for LCTRU eviction: exact 0 (least, evicted
// first), 8-bit codecs 1, 4-bit 2, 2-bit 3.
int tolerance_level(Codec codec);

}  // namespace llmd::kvstore
