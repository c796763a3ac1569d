// Chunk-native KV quantization (see kv_quant.h).
#include "kvstore/kv_quant.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LLMD_KV_QUANT_X86 1
#endif

namespace llmd::kvstore::kv_quant {
namespace {

std::uint64_t code_bytes(std::int64_t n, int bits) {
  return (static_cast<std::uint64_t>(n) * static_cast<std::uint64_t>(bits) + 7) / 8;
}
std::int64_t n_groups(std::int64_t n, int bits) { return (n + v_group(bits) - 1) / v_group(bits); }

void put_half(std::uint8_t* p, std::uint16_t h) { std::memcpy(p, &h, 2); }
std::uint16_t get_half(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

bool half_finite(std::uint16_t h) { return (h & 0x7C00u) != 0x7C00u; }

// The largest half <= x, and the smallest half >= x (x finite).
std::uint16_t half_down(float x) {
  std::uint16_t h = to_half(x);
  if (from_half(h) > x) h = (h == 0x0000u) ? 0x8001u : ((h & 0x8000u) ? h + 1 : h - 1);
  return h;
}
std::uint16_t half_up(float x) {
  std::uint16_t h = to_half(x);
  if (from_half(h) < x) h = (h == 0x8000u) ? 0x0001u : ((h & 0x8000u) ? h - 1 : h + 1);
  return h;
}

struct Range {
  float min, step;           // as stored (half-exact)
  std::uint16_t hmin, hstep;
};

// The quantization range of values [lo, hi] at `maxq` levels: minimum rounded down, step up, so
// that (hi - min) / step <= maxq.
Result<Range> make_range(float lo, float hi, int maxq) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    return Error(Errc::invalid_argument, "KV values are not finite and cannot be quantized");
  }
  Range r;
  r.hmin = half_down(lo);
  r.min = from_half(r.hmin);
  const float span = hi - r.min;
  r.hstep = span > 0.0f ? half_up(span / static_cast<float>(maxq)) : 0;
  r.step = from_half(r.hstep);
  if (r.step * static_cast<float>(maxq) < span) {  // float rounding of the division
    r.hstep = half_up(std::nextafter(r.step, INFINITY));
    r.step = from_half(r.hstep);
  }
  if (!half_finite(r.hmin) || !half_finite(r.hstep)) {
    return Error(Errc::invalid_argument, "KV values exceed the range of half precision and cannot be quantized");
  }
  return r;
}

inline unsigned code_of(float x, const Range& r, int maxq) {
  if (r.step == 0.0f) return 0;
  const float q = std::nearbyint((x - r.min) / r.step);
  return static_cast<unsigned>(std::clamp(q, 0.0f, static_cast<float>(maxq)));
}

// Packs one code at index i of a row (the row's bytes start zeroed).
inline void pack(std::uint8_t* row, std::int64_t i, int bits, unsigned q) {
  const std::uint64_t bit = static_cast<std::uint64_t>(i) * static_cast<std::uint64_t>(bits);
  row[bit / 8] = static_cast<std::uint8_t>(row[bit / 8] | (q << (bit % 8)));
}

// The minimum and step of every channel of a K section, as floats.
void k_ranges(const std::uint8_t* in, std::int64_t n, std::vector<float>& mins, std::vector<float>& steps) {
  mins.resize(static_cast<std::size_t>(n));
  steps.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    mins[static_cast<std::size_t>(i)] = from_half(get_half(in + 2 * i));
    steps[static_cast<std::size_t>(i)] = from_half(get_half(in + 2 * n + 2 * i));
  }
}

// One row's codes [first, first + len) decoded: store(i, min[p] + step[p] * q), p = i * stride
// (the K path gives per-channel arrays, stride 1; the V path one group's pair, stride 0).
template <int B, typename Store>
void row_scalar(const std::uint8_t* row, std::int64_t first, std::int64_t len, const float* mins, const float* steps,
                std::int64_t stride, Store&& store) {
  constexpr unsigned kMask = (1u << B) - 1;
  constexpr int kPerByte = 8 / B;
  for (std::int64_t i = first; i < first + len; ++i) {
    const unsigned q = (row[i / kPerByte] >> ((i % kPerByte) * B)) & kMask;
    const std::int64_t p = i * stride;
    store(i, mins[p] + steps[p] * static_cast<float>(q));
  }
}

// The same into halves at `out` (need not be aligned).
template <int B>
void row_f16_scalar(const std::uint8_t* row, std::int64_t first, std::int64_t len, const float* mins,
                    const float* steps, std::int64_t stride, std::uint8_t* out) {
  row_scalar<B>(row, first, len, mins, steps, stride, [out](std::int64_t i, float v) {
    const std::uint16_t h = to_half(v);
    std::memcpy(out + 2 * i, &h, 2);
  });
}

#ifdef LLMD_KV_QUANT_X86
// Eight codes at a time: the codes as 32-bit lanes (a broadcast word shifted per lane; bytes
// widened at 8 bits), min + step * q in float (multiply, then add: the scalar path's rounding), and
// the halves by F16C's round to nearest even. Ranges: per lane (K) or broadcast (V, stride 0).
template <int B>
__attribute__((target("avx2,f16c"))) void row_f16_avx2(const std::uint8_t* row, std::int64_t first, std::int64_t len,
                                                        const float* mins, const float* steps, std::int64_t stride,
                                                        std::uint8_t* out) {
  const __m256i shifts = B == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                                : _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
  const __m256 gmin = _mm256_set1_ps(mins[0]), gstep = _mm256_set1_ps(steps[0]);
  std::int64_t i = first;
  for (; i + 8 <= first + len; i += 8) {
    __m256i q;
    if constexpr (B == 8) {
      q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i)));
    } else {
      std::uint32_t w = 0;
      std::memcpy(&w, row + i * B / 8, B);  // 8 codes of B bits: B bytes
      q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(w)), shifts), mask);
    }
    const __m256 mn = stride ? _mm256_loadu_ps(mins + i) : gmin;
    const __m256 st = stride ? _mm256_loadu_ps(steps + i) : gstep;
    const __m256 v = _mm256_add_ps(mn, _mm256_mul_ps(st, _mm256_cvtepi32_ps(q)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  row_f16_scalar<B>(row, i, first + len - i, mins, steps, stride, out);
}

bool cpu_has_avx2_f16c() {
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;  // F16C by CPUID (clang's __builtin_cpu_supports lacks it)
  return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
}
std::atomic<bool> g_simd{cpu_has_avx2_f16c()};
#else
std::atomic<bool> g_simd{false};
#endif

// Calls fn(std::integral_constant<int, bits>{}) for a valid code width.
template <typename Fn>
void with_bits(int bits, Fn&& fn) {
  switch (bits) {
    case 2: return fn(std::integral_constant<int, 2>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    default: return fn(std::integral_constant<int, 8>{});
  }
}

// Walks a K section (made with n_cells, n, bits): row(cell, codes, mins, steps) per cell, with the
// channels' ranges as floats.
template <typename RowFn>
void walk_k(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, RowFn&& row) {
  thread_local std::vector<float> mins, steps;
  k_ranges(in, n, mins, steps);
  const std::uint64_t row_bytes = code_bytes(n, bits);
  const std::uint8_t* codes = in + 4 * n;
  for (std::uint32_t c = 0; c < n_cells; ++c) row(c, codes + c * row_bytes, mins.data(), steps.data());
}

// Walks a V section: group(cell, codes, first, len, min, step) per cell and group.
template <typename GroupFn>
void walk_v(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, GroupFn&& group) {
  const std::int64_t groups = n_groups(n, bits), g = v_group(bits);
  const std::uint64_t row_bytes = 4 * static_cast<std::uint64_t>(groups) + code_bytes(n, bits);
  for (std::uint32_t c = 0; c < n_cells; ++c) {
    const std::uint8_t* src = in + c * row_bytes;
    for (std::int64_t k = 0; k < groups; ++k) {
      const float min = from_half(get_half(src + 4 * k)), step = from_half(get_half(src + 4 * k + 2));
      group(c, src + 4 * groups, k * g, std::min(n, (k + 1) * g) - k * g, min, step);
    }
  }
}

// A row's codes into halves: the vector path where the CPU has it, else the scalar one.
void row_f16(int bits, const std::uint8_t* row, std::int64_t first, std::int64_t len, const float* mins,
             const float* steps, std::int64_t stride, std::uint8_t* out) {
  with_bits(bits, [&](auto b) {
#ifdef LLMD_KV_QUANT_X86
    if (g_simd.load(std::memory_order_relaxed)) return row_f16_avx2<b()>(row, first, len, mins, steps, stride, out);
#endif
    row_f16_scalar<b()>(row, first, len, mins, steps, stride, out);
  });
}

}  // namespace

std::uint16_t to_half(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0));
  if (abs >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds past 65504: infinity
  if (abs < 0x38800000u) {  // below the smallest normal half: a subnormal (or zero)
    const float a = std::bit_cast<float>(abs);
    const auto m = static_cast<std::uint32_t>(std::nearbyint(a * 16777216.0f));  // units of 2^-24
    return static_cast<std::uint16_t>(sign | m);
  }
  // Normal: rebias the exponent, round the mantissa to 10 bits, nearest even.
  std::uint32_t h = ((abs >> 13) - (112u << 10));
  const std::uint32_t rest = abs & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

float from_half(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  if (exp == 0) {
    const float v = static_cast<float>(man) / 16777216.0f;
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

bool valid_bits(int bits) { return bits == 2 || bits == 4 || bits == 8; }

std::uint64_t k_section_bytes(std::uint32_t n_cells, std::int64_t n, int bits) {
  return 4 * static_cast<std::uint64_t>(n) + n_cells * code_bytes(n, bits);
}

std::uint64_t v_section_bytes(std::uint32_t n_cells, std::int64_t n, int bits) {
  return n_cells * (4 * static_cast<std::uint64_t>(n_groups(n, bits)) + code_bytes(n, bits));
}

Status encode_k(const float* x, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out) {
  if (!valid_bits(bits)) return Error(Errc::invalid_argument, "unsupported code width");
  const int maxq = (1 << bits) - 1;
  const std::uint64_t row_bytes = code_bytes(n, bits);
  std::uint8_t* codes = out + 4 * n;
  std::memset(codes, 0, n_cells * row_bytes);
  for (std::int64_t i = 0; i < n; ++i) {
    float lo = x[i], hi = x[i];
    for (std::uint32_t c = 1; c < n_cells; ++c) {
      const float v = x[static_cast<std::int64_t>(c) * n + i];
      if (!std::isfinite(v)) return Error(Errc::invalid_argument, "KV values are not finite and cannot be quantized");
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    auto r = make_range(lo, hi, maxq);
    if (!r) return r.error();
    put_half(out + 2 * i, r->hmin);
    put_half(out + 2 * n + 2 * i, r->hstep);
    for (std::uint32_t c = 0; c < n_cells; ++c) {
      pack(codes + c * row_bytes, i, bits, code_of(x[static_cast<std::int64_t>(c) * n + i], *r, maxq));
    }
  }
  return {};
}

Status encode_v(const float* x, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out) {
  if (!valid_bits(bits)) return Error(Errc::invalid_argument, "unsupported code width");
  const int maxq = (1 << bits) - 1;
  const std::int64_t groups = n_groups(n, bits);
  const std::uint64_t row_bytes = 4 * static_cast<std::uint64_t>(groups) + code_bytes(n, bits);
  for (std::uint32_t c = 0; c < n_cells; ++c) {
    const float* row = x + static_cast<std::int64_t>(c) * n;
    std::uint8_t* dst = out + c * row_bytes;
    std::uint8_t* codes = dst + 4 * groups;
    std::memset(codes, 0, code_bytes(n, bits));
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t b = g * v_group(bits), e = std::min(n, b + v_group(bits));
      float lo = row[b], hi = row[b];
      for (std::int64_t i = b; i < e; ++i) {
        if (!std::isfinite(row[i])) return Error(Errc::invalid_argument, "KV values are not finite and cannot be quantized");
        lo = std::min(lo, row[i]);
        hi = std::max(hi, row[i]);
      }
      auto r = make_range(lo, hi, maxq);
      if (!r) return r.error();
      put_half(dst + 4 * g, r->hmin);
      put_half(dst + 4 * g + 2, r->hstep);
      for (std::int64_t i = b; i < e; ++i) pack(codes, i, bits, code_of(row[i], *r, maxq));
    }
  }
  return {};
}

void decode_k(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, float* out) {
  walk_k(in, n_cells, n, bits, [&](std::uint32_t c, const std::uint8_t* row, const float* mins, const float* steps) {
    float* dst = out + static_cast<std::int64_t>(c) * n;
    with_bits(bits, [&](auto b) {
      row_scalar<b()>(row, 0, n, mins, steps, 1, [dst](std::int64_t i, float v) { dst[i] = v; });
    });
  });
}

void decode_v(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, float* out) {
  walk_v(in, n_cells, n, bits,
         [&](std::uint32_t c, const std::uint8_t* codes, std::int64_t first, std::int64_t len, float min, float step) {
           float* dst = out + static_cast<std::int64_t>(c) * n;
           with_bits(bits, [&](auto b) {
             row_scalar<b()>(codes, first, len, &min, &step, 0, [dst](std::int64_t i, float v) { dst[i] = v; });
           });
         });
}

bool f16_simd_available() { return g_simd.load(); }

void set_f16_simd(bool enabled) {
#ifdef LLMD_KV_QUANT_X86
  g_simd = enabled && cpu_has_avx2_f16c();
#else
  (void)enabled;
#endif
}

void decode_k_f16(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out) {
  walk_k(in, n_cells, n, bits, [&](std::uint32_t c, const std::uint8_t* row, const float* mins, const float* steps) {
    row_f16(bits, row, 0, n, mins, steps, 1, out + 2 * static_cast<std::int64_t>(c) * n);
  });
}

void decode_v_f16(const std::uint8_t* in, std::uint32_t n_cells, std::int64_t n, int bits, std::uint8_t* out) {
  walk_v(in, n_cells, n, bits,
         [&](std::uint32_t c, const std::uint8_t* codes, std::int64_t first, std::int64_t len, float min, float step) {
           row_f16(bits, codes, first, len, &min, &step, 0, out + 2 * static_cast<std::int64_t>(c) * n);
         });
}

}  // namespace llmd::kvstore::kv_quant
