// The chunk-native codecs (kivi8 / kivi4 / kivi2): per-element error bounds over random and
// adversarial data (outlier channels, constant rows, huge and tiny values, NaN/Inf), sizes, blob
// header and checksum coverage, and decoding straight into a state.
#include "kvstore/kv_quant.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "engine/ggml_types.h"
#include "kvstore/chunk.h"
#include "tests/kvstore/chunk_store_util.h"

namespace llmd::kvstore {
namespace {

constexpr int kBits[] = {8, 4, 2};

// The bound kv_quant.h promises: within half a step of its range (K: the channel over the cells;
// V: the group within the row), plus float rounding.
// out_rel: the relative rounding of the decoded values' type (0 for f32, 2^-11 for f16).
void expect_within_bound(const std::vector<float>& x, const std::vector<float>& y, std::uint32_t n_cells,
                         std::int64_t n, int bits, bool is_k, const char* what, float out_rel = 0.0f) {
  const float maxq = static_cast<float>((1 << bits) - 1);
  auto range = [&](std::uint32_t c, std::int64_t i) {
    float lo = INFINITY, hi = -INFINITY;
    if (is_k) {
      for (std::uint32_t d = 0; d < n_cells; ++d) {
        lo = std::min(lo, x[d * n + i]);
        hi = std::max(hi, x[d * n + i]);
      }
    } else {
      const std::int64_t g = kv_quant::v_group(bits), b = i / g * g, e = std::min(n, b + g);
      for (std::int64_t j = b; j < e; ++j) {
        lo = std::min(lo, x[c * n + j]);
        hi = std::max(hi, x[c * n + j]);
      }
    }
    return std::pair{lo, hi};
  };
  for (std::uint32_t c = 0; c < n_cells; ++c) {
    for (std::int64_t i = 0; i < n; ++i) {
      const auto [lo, hi] = range(c, i);
      // The stored step is the range over maxq rounded up to a half (<= 2^-10 relative), and the
      // minimum is rounded down (which widens the range by up to its own half ulp).
      const float widen = std::fabs(lo) * 1e-3f + 6e-8f;
      const float step = (hi - lo + widen) / maxq * (1.0f + 2e-3f) + 6e-8f;
      const float err = std::fabs(x[c * n + i] - y[c * n + i]);
      ASSERT_LE(err, step / 2 + std::fabs(x[c * n + i]) * (1e-6f + out_rel) + step * out_rel + 1e-7f)
          << what << " bits " << bits << (is_k ? " K" : " V") << " cell " << c << " elem " << i << ": " << x[c * n + i]
          << " -> " << y[c * n + i];
    }
  }
}

void round_trip(const std::vector<float>& x, std::uint32_t n_cells, std::int64_t n, const char* what) {
  for (int bits : kBits) {
    for (bool is_k : {true, false}) {
      const std::uint64_t bytes = is_k ? kv_quant::k_section_bytes(n_cells, n, bits) : kv_quant::v_section_bytes(n_cells, n, bits);
      std::vector<std::uint8_t> packed(bytes + 1, 0xA5);  // one guard byte
      ASSERT_TRUE(is_k ? kv_quant::encode_k(x.data(), n_cells, n, bits, packed.data())
                       : kv_quant::encode_v(x.data(), n_cells, n, bits, packed.data()));
      EXPECT_EQ(packed.back(), 0xA5) << "wrote past its section";
      std::vector<float> y(x.size(), NAN);
      if (is_k) {
        kv_quant::decode_k(packed.data(), n_cells, n, bits, y.data());
      } else {
        kv_quant::decode_v(packed.data(), n_cells, n, bits, y.data());
      }
      expect_within_bound(x, y, n_cells, n, bits, is_k, what);
    }
  }
}

TEST(KvQuant, HalvesRoundTripAndRoundToNearestEven) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00u) == 0x7C00u && (h & 0x3FFu)) continue;  // NaNs
    const float f = kv_quant::from_half(static_cast<std::uint16_t>(h));
    EXPECT_EQ(kv_quant::to_half(f), h) << h;
  }
  EXPECT_EQ(kv_quant::from_half(kv_quant::to_half(1.0f + 1.0f / 2048)), 1.0f);  // a tie: to even
  EXPECT_EQ(kv_quant::from_half(kv_quant::to_half(1.0f + 3.0f / 2048)), 1.0f + 2.0f / 1024);
  EXPECT_TRUE(std::isinf(kv_quant::from_half(kv_quant::to_half(65520.0f))));
  EXPECT_EQ(kv_quant::from_half(kv_quant::to_half(65519.0f)), 65504.0f);
}

TEST(KvQuant, RandomDataStaysWithinHalfAStep) {
  std::mt19937 rng(7);
  for (std::int64_t n : {1, 5, 32, 33, 64, 100}) {
    for (std::uint32_t cells : {1u, 3u, 16u, 64u}) {
      std::normal_distribution<float> d(0.5f, 2.0f);
      std::vector<float> x(cells * static_cast<std::size_t>(n));
      for (auto& v : x) v = d(rng);
      round_trip(x, cells, n, "normal");
    }
  }
}

TEST(KvQuant, AdversarialData) {
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  const std::uint32_t cells = 16;
  const std::int64_t n = 64;
  std::vector<float> x(cells * n);
  // Outlier channels: two channels ~100x the others (what per-channel K is for).
  for (std::uint32_t c = 0; c < cells; ++c) {
    for (std::int64_t i = 0; i < n; ++i) x[c * n + i] = d(rng) * (i == 3 || i == 40 ? 100.0f : 1.0f);
  }
  round_trip(x, cells, n, "outlier channels");
  // Constant rows and channels decode exactly (a zero step).
  std::fill(x.begin(), x.end(), 0.3125f);
  round_trip(x, cells, n, "constant");
  for (int bits : kBits) {
    std::vector<std::uint8_t> packed(kv_quant::k_section_bytes(cells, n, bits));
    ASSERT_TRUE(kv_quant::encode_k(x.data(), cells, n, bits, packed.data()));
    std::vector<float> y(x.size());
    kv_quant::decode_k(packed.data(), cells, n, bits, y.data());
    EXPECT_EQ(y, x);
  }
  // The edges of half precision, subnormals and a sign flip within a channel.
  for (std::uint32_t c = 0; c < cells; ++c) {
    for (std::int64_t i = 0; i < n; ++i) {
      x[c * n + i] = (i % 4 == 0) ? ((c % 2) ? 65504.0f : -65504.0f) : (i % 4 == 1) ? 3e-7f * static_cast<float>(c) : -1e-5f;
    }
  }
  round_trip(x, cells, n, "extremes");
}

TEST(KvQuant, NonFiniteValuesAndHugeRangesAreRefused) {
  const std::uint32_t cells = 4;
  const std::int64_t n = 8;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY, 1e6f}) {
    for (std::size_t at : {std::size_t{0}, std::size_t{13}}) {
      std::vector<float> x(cells * n, 1.0f);
      x[at] = bad;
      std::vector<std::uint8_t> packed(kv_quant::k_section_bytes(cells, n, 4) + kv_quant::v_section_bytes(cells, n, 4));
      auto k = kv_quant::encode_k(x.data(), cells, n, 4, packed.data());
      auto v = kv_quant::encode_v(x.data(), cells, n, 4, packed.data());
      ASSERT_FALSE(k) << bad;
      ASSERT_FALSE(v) << bad;
      EXPECT_EQ(k.error().code(), Errc::invalid_argument);
    }
  }
}

// Decoding straight into halves gives the float decoder's values rounded to nearest even, on the
// vector path (where the CPU has it) and the scalar one alike, for every width, row length
// (tails of fewer than 8 values, V groups cut short) and misaligned output.
TEST(KvQuant, HalfDecodersMatchTheFloatDecoders) {
  std::mt19937 rng(21);
  std::normal_distribution<float> d(0.0f, 3.0f);
  const bool simd = kv_quant::f16_simd_available();
  for (std::int64_t n : {1, 5, 8, 33, 64, 100, 192}) {
    for (std::uint32_t cells : {1u, 16u}) {
      std::vector<float> x(cells * static_cast<std::size_t>(n));
      for (auto& v : x) v = d(rng);
      for (int bits : kBits) {
        for (bool is_k : {true, false}) {
          std::vector<std::uint8_t> packed(is_k ? kv_quant::k_section_bytes(cells, n, bits)
                                                : kv_quant::v_section_bytes(cells, n, bits));
          ASSERT_TRUE(is_k ? kv_quant::encode_k(x.data(), cells, n, bits, packed.data())
                           : kv_quant::encode_v(x.data(), cells, n, bits, packed.data()));
          std::vector<float> f(x.size());
          (is_k ? kv_quant::decode_k : kv_quant::decode_v)(packed.data(), cells, n, bits, f.data());
          for (bool vector_path : {true, false}) {
            kv_quant::set_f16_simd(vector_path);
            std::vector<std::uint8_t> h(2 * x.size() + 1, 0xCC);  // written from byte 1: misaligned
            (is_k ? kv_quant::decode_k_f16 : kv_quant::decode_v_f16)(packed.data(), cells, n, bits, h.data() + 1);
            for (std::size_t i = 0; i < f.size(); ++i) {
              std::uint16_t got;
              std::memcpy(&got, h.data() + 1 + 2 * i, 2);
              ASSERT_EQ(got, kv_quant::to_half(f[i])) << "n " << n << " bits " << bits << (is_k ? " K" : " V")
                                                      << (vector_path ? " vector" : " scalar") << " at " << i;
            }
            EXPECT_EQ(h[0], 0xCC);
          }
          kv_quant::set_f16_simd(simd);
        }
      }
    }
  }
}

TEST(KvQuant, SectionSizesArePackedDensely) {
  // K: a half minimum and step per channel, then the codes; V: per row a pair per group (32 values; 64 at 8 bits).
  EXPECT_EQ(kv_quant::k_section_bytes(64, 64, 4), 64u * 4 + 64u * 32);
  EXPECT_EQ(kv_quant::k_section_bytes(16, 64, 2), 64u * 4 + 16u * 16);
  EXPECT_EQ(kv_quant::v_section_bytes(16, 64, 4), 16u * (2 * 4 + 32));
  EXPECT_EQ(kv_quant::v_section_bytes(16, 64, 8), 16u * (4 + 64));
  EXPECT_EQ(kv_quant::v_section_bytes(1, 33, 2), 2u * 4 + 9u);
}

using test_util::normal_cells;

// Chunk blobs in the new codecs: smaller than q8_0 / q4_0, within the bound after a round trip in
// f16, every flipped byte detected, and decoded straight into a state (V transposed or not).
TEST(KiviChunk, BlobsRoundTripAndShrink) {
  for (bool v_trans : {false, true}) {
    const auto s = normal_cells(64, v_trans, 5);
    const auto layout = engine::layout_of(s, 0);
    const auto exact = *encode_chunk(s, layout, Codec::exact);
    const auto q8 = *encode_chunk(s, layout, Codec::q8_0);
    const auto q4 = *encode_chunk(s, layout, Codec::q4_0);
    std::size_t last = exact.size();
    for (Codec c : {Codec::kivi8, Codec::kivi4, Codec::kivi2}) {
      auto blob = encode_chunk(s, layout, c);
      ASSERT_TRUE(blob) << blob.error().to_string();
      EXPECT_LT(blob->size(), last) << codec_name(c);
      last = blob->size();
      // At 64-cell chunks: 8.5 bits for K (the ranges over 64 cells) and for V (64-value
      // groups), as q8_0; 4.5 and 5 bits (32-value groups) against q4_0's 4.5.
      if (c == Codec::kivi8) {
        EXPECT_LE(blob->size(), q8.size());
      }
      if (c == Codec::kivi4) {
        EXPECT_LT(blob->size(), q4.size() * 106 / 100);
      }
      auto info = inspect_chunk(*blob);
      ASSERT_TRUE(info);
      EXPECT_EQ(info->codec, c);
      auto back = decode_chunk(*blob, layout);
      ASSERT_TRUE(back) << back.error().to_string();
      const int bits = c == Codec::kivi8 ? 8 : c == Codec::kivi4 ? 4 : 2;
      const auto f16 = *engine::ggml_type_from_name("f16"), f32 = *engine::ggml_type_from_name("f32");
      for (std::size_t l = 0; l < 2; ++l) {
        for (bool is_k : {true, false}) {
          std::vector<float> x(64 * 64), y(64 * 64);
          ASSERT_TRUE(engine::convert_rows(f16, (is_k ? s.k : s.v)[l].data.data(), f32, x.data(), 64, 64));
          ASSERT_TRUE(engine::convert_rows(f16, (is_k ? back->k : back->v)[l].data.data(), f32, y.data(), 64, 64));
          // Decoded back into f16: one more rounding joins the bound.
          expect_within_bound(x, y, 64, 64, bits, is_k, "chunk", 1.0f / 2048);
        }
      }
      // Damage anywhere is detected.
      for (std::size_t i = 0; i < blob->size(); i += 11) {
        auto bad = *blob;
        bad[i] ^= 0x04;
        auto r = decode_chunk(bad, layout);
        ASSERT_FALSE(r) << "flip at " << i << " (" << codec_name(c) << ")";
        EXPECT_EQ(r.error().code(), Errc::corrupt);
      }
      // Into a state being built: the same rows as decode_chunk.
      std::vector<std::uint8_t> buffer, scratch;
      engine::SeqStateWriter out(buffer, layout, 2, 1, 0, 64);
      ASSERT_TRUE(decode_chunk_into(*blob, layout, out, 0, scratch));
      auto st = engine::parse_seq_state(out.bytes());
      ASSERT_TRUE(st) << st.error().to_string();
      for (std::size_t l = 0; l < 2; ++l) {
        EXPECT_EQ(st->streams[0].k[l].data, back->k[l].data);
        EXPECT_EQ(st->streams[0].v[l].data, back->v[l].data);
      }
    }
  }
}

// A chunk whose KV holds a non-finite value cannot be quantized: encode_chunk says so (the store
// keeps such a chunk exact), exact still encodes it.
TEST(KiviChunk, NonFiniteKvIsRefusedClearly) {
  auto s = normal_cells(8, false, 9);
  s.k[1].data[10] = 0x00;
  s.k[1].data[11] = 0x7E;  // f16 NaN
  const auto layout = engine::layout_of(s, 0);
  auto r = encode_chunk(s, layout, Codec::kivi4);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_NE(r.error().message().find("not finite"), std::string::npos) << r.error().message();
  EXPECT_TRUE(encode_chunk(s, layout, Codec::exact));
}

}  // namespace
}  // namespace llmd::kvstore
