#include "engine/ggml_types.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace llmd::engine {
namespace {

TEST(GgmlTypes, NamesRoundTrip) {
  for (const char* name : {"f32", "f16", "bf16", "q8_0", "q4_0"}) {
    auto t = ggml_type_from_name(name);
    ASSERT_TRUE(t) << name;
    EXPECT_EQ(ggml_type_to_name(*t), name);
  }
  EXPECT_EQ(ggml_type_from_name("q9_9").error().code(), Errc::invalid_argument);
  EXPECT_EQ(ggml_type_to_name(99999), "type-99999");
}

TEST(GgmlTypes, RowBytes) {
  EXPECT_EQ(*kv_type_row_bytes("f16", 64), 128u);
  EXPECT_EQ(*kv_type_row_bytes("q8_0", 64), 68u);  // 2 blocks of 32: f16 scale + 32 int8
  EXPECT_EQ(*kv_type_row_bytes("q4_0", 64), 36u);
  EXPECT_FALSE(kv_type_row_bytes("q8_0", 33).has_value());  // not a whole block
  EXPECT_FALSE(kv_type_row_bytes("nope", 32).has_value());
  EXPECT_EQ(*ggml_row_elements(*ggml_type_from_name("f16"), 128), 64);
  EXPECT_EQ(*ggml_row_elements(*ggml_type_from_name("q8_0"), 68), 64);
  EXPECT_FALSE(ggml_row_elements(*ggml_type_from_name("q8_0"), 67).has_value());
}

// f32 -> f16 -> q8_0 / q4_0 -> f32 keeps values close, with error growing as bits shrink.
TEST(GgmlTypes, ConvertRowsQuantizesWithBoundedError) {
  constexpr int64_t n = 256, rows = 4;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> src(n * rows);
  for (auto& x : src) x = dist(rng);

  const GgmlType f32 = *ggml_type_from_name("f32"), f16 = *ggml_type_from_name("f16");
  std::vector<uint8_t> half(*ggml_row_bytes(f16, n) * rows);
  ASSERT_TRUE(convert_rows(f32, src.data(), f16, half.data(), rows, n));

  double prev_err = 0.0;
  for (const char* q : {"q8_0", "q4_0"}) {
    const GgmlType qt = *ggml_type_from_name(q);
    std::vector<uint8_t> packed(*ggml_row_bytes(qt, n) * rows);
    ASSERT_TRUE(convert_rows(f16, half.data(), qt, packed.data(), rows, n));
    std::vector<float> back(n * rows);
    ASSERT_TRUE(convert_rows(qt, packed.data(), f32, back.data(), rows, n));
    double err = 0.0;
    for (size_t i = 0; i < src.size(); ++i) err += std::fabs(back[i] - src[i]);
    err /= static_cast<double>(src.size());
    EXPECT_LT(err, 0.15) << q;
    EXPECT_GT(err, prev_err) << q << " should lose more than the previous type";
    prev_err = err;
  }
}

TEST(GgmlTypes, ConvertRowsRejectsBadInput) {
  const GgmlType f32 = *ggml_type_from_name("f32"), q8 = *ggml_type_from_name("q8_0");
  std::vector<uint8_t> buf(1024);
  EXPECT_EQ(convert_rows(f32, buf.data(), q8, buf.data(), 1, 33).error().code(), Errc::invalid_argument);
  EXPECT_EQ(convert_rows(-1, buf.data(), q8, buf.data(), 1, 32).error().code(), Errc::invalid_argument);
  const GgmlType iq2 = *ggml_type_from_name("iq2_xxs");  // needs an importance matrix
  EXPECT_EQ(convert_rows(f32, buf.data(), iq2, buf.data(), 1, 256).error().code(), Errc::invalid_argument);
}

}  // namespace
}  // namespace llmd::engine
