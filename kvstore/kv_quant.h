// Chunk-native KV quantization (after KIVI, Liu et al., ICML'24): the arithmetic behind the
// kivi8 / kivi4 / kivi2 chunk codecs (chunk.h), on f32 values.
//
// Keys have outlier *channels* (a few dimensions are large in every token), so K is quantized per
// channel: over a chunk's n_cells tokens, each of the row's n channels gets its own asymmetric
// range (minimum and step). Values have no such structure and are read per token, so V is
// quantized per token in groups of v_group(bits) channels (64 at 8 bits, where a group's
// range costs more than it saves; 32 below). Codes are `bits` wide (2, 4 or 8), packed
// densely, little end first within a byte; every parameter is an IEEE half.
//
//   K section  n half minimums, n half steps, then n_cells rows of packed codes
//   V section  n_cells rows, each: per group a half minimum and a half step, then packed codes
//
// Error bound: the minimum is rounded down and the step up to halves, so every code is in range
// and each value decodes to within step / 2 of itself (plus float rounding), where step =
// (max - min) / (2^bits - 1) of its channel (K) or group (V). A constant channel or group decodes
// exactly (step 0). Non-finite values, and ranges a half cannot hold, are refused at encoding
// (invalid_argument): the caller keeps such a chunk exact.
//
// Pure code; thread-safe.
#pragma once

#include <cstdint>

#include "common/result.h"

namespace llmd::kvstore::kv_quant {

constexpr std::int64_t v_group(int bits) { return bits >= 8 ? 64 : 32; }

bool valid_bits(int bits);  // 2, 4 or 8

// Bytes of a layer's K or V section for n_cells rows of n values.
std::uint64_t k_section_bytes(std::uint32_t n_cells, std::int64_t n, int bits);
std::uint64_t v_section_bytes(std::uint32_t n_cells, std::int64_t n, int bits);

// Encode n_cells cell-major rows of n values (x[cell * n + i]) into `out` (exactly the section's
// bytes). Errors: invalid_argument (non-finite values, a range beyond half precision).
Status encode_k(const float* x, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out);
Status encode_v(const float* x, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out);

// Decode a section (made with the same n_cells, n, bits) into n_cells cell-major rows of n values.
void decode_k(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, float* out);
void decode_v(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, float* out);

// The same, straight into IEEE halves (the usual KV type; `out`: 2 * n_cells * n bytes, any
// alignment): the values decode_k / decode_v give, rounded to nearest even. With AVX2 and F16C
// (checked at run time) eight values at a time.
void decode_k_f16(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out);
void decode_v_f16(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out);
// Whether the f16 decoders use the vector path on this CPU; set_f16_simd(false) switches it off
// (tests compare both paths). Not thread-safe: call before decoding starts.
bool f16_simd_available();
void set_f16_simd(bool enabled);

// IEEE half <-> float (round to nearest even; exposed for tests).
std::uint16_t to_half(float f);
float from_half(std::uint16_t h);

}  // namespace llmd::kvstore::kv_quant
