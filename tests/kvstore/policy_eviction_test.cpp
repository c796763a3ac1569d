// Tolerance policies and LCTRU eviction order (pure code).
#include <random>

#include <gtest/gtest.h>

#include "kvstore/eviction.h"
#include "kvstore/policy.h"

namespace llmd::kvstore {
namespace {

engine::KvLayout f16_layout(std::uint32_t n_layer, std::uint64_t elems) {
  engine::KvLayout l;
  l.n_layer = n_layer;
  for (std::uint32_t i = 0; i < n_layer; ++i) {
    l.k_type.push_back(1);  // GGML_TYPE_F16
    l.v_type.push_back(1);
    l.k_row_bytes.push_back(elems * 2);
    l.v_row_bytes.push_back(elems * 2);
  }
  return l;
}

TEST(Eviction, LeastTolerableFirstThenLeastRecentlyUsed) {
  std::vector<EvictionCandidate> c = {
      {2, 1, 0, 100, false},  // 0: q4_0, oldest
      {0, 5, 0, 100, false},  // 1: exact, recent
      {0, 3, 0, 100, false},  // 2: exact, older
      {1, 2, 0, 100, false},  // 3: q8_0
  };
  EXPECT_EQ(lctru_victims(c, 400), (std::vector<std::size_t>{2, 1, 3, 0}));
  EXPECT_EQ(lctru_victims(c, 150), (std::vector<std::size_t>{2, 1}));  // stops once enough is freed
  EXPECT_TRUE(lctru_victims(c, 0).empty());
}

TEST(Eviction, LaterChunksOfASessionGoFirstAndPinnedNever) {
  std::vector<EvictionCandidate> c = {
      {0, 7, 0, 10, false}, {0, 7, 1, 10, false}, {0, 7, 2, 10, false}, {0, 1, 0, 10, true},
  };
  EXPECT_EQ(lctru_victims(c, 1000), (std::vector<std::size_t>{2, 1, 0}));  // pinned one stays, even though oldest
}

TEST(Policy, NamesRoundTripAndUnknownIsAnError) {
  for (auto k : {PolicyKind::exact, PolicyKind::position, PolicyKind::attention, PolicyKind::q8_0, PolicyKind::q4_0,
                 PolicyKind::kivi8, PolicyKind::kivi4, PolicyKind::kivi2}) {
    auto back = policy_from_name(policy_name(k));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, k);
  }
  auto bad = policy_from_name("zip");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("position"), std::string::npos);
}

double ratio(const CodecRatios& r, Codec c) { return r[static_cast<std::size_t>(c)]; }

TEST(Policy, CodecRatiosFollowTheTypes) {
  // Per cell, exact: a 4-byte position + 2 layers x (K + V) x 64 f16 values.
  const double exact = 4 + 2 * 2 * 128;
  const auto r = codec_ratios(f16_layout(2, 64), 64);
  EXPECT_DOUBLE_EQ(ratio(r, Codec::exact), 1.0);
  EXPECT_NEAR(ratio(r, Codec::q8_0), (4 + 4 * 68) / exact, 1e-9);  // 34 bytes per 32 elements
  EXPECT_NEAR(ratio(r, Codec::q4_0), (4 + 4 * 36) / exact, 1e-9);  // 18 bytes per 32 elements
  // kivi4 at 64-cell chunks: K 32 bytes of codes + 64 x 4 bytes of ranges over 64 cells; V 32
  // bytes of codes + 2 groups x 4 bytes.
  EXPECT_NEAR(ratio(r, Codec::kivi4), (4 + 2 * ((32 + 4) + (32 + 8))) / exact, 1e-9);
  EXPECT_LT(ratio(r, Codec::kivi2), ratio(r, Codec::kivi4));
  EXPECT_NEAR(ratio(r, Codec::kivi8), ratio(r, Codec::q8_0), 1e-9);  // 8.5 bits each at 64-cell chunks
  // Shorter chunks pay more for K's ranges.
  EXPECT_GT(ratio(codec_ratios(f16_layout(2, 64), 16), Codec::kivi4), ratio(r, Codec::kivi4));
  const auto odd = codec_ratios(f16_layout(1, 48), 16);  // not whole 32-element blocks
  EXPECT_EQ(ratio(odd, Codec::q8_0), 0.0);
  EXPECT_EQ(ratio(odd, Codec::q4_0), 0.0);
  EXPECT_GT(ratio(odd, Codec::kivi4), 0.0);  // the chunk-native codecs take any row length
}

TEST(Policy, ExactKeepsEverythingExact) {
  PolicyParams p;
  const auto imp = position_importance(10, p);
  for (Codec c : choose_codecs(p, imp, codec_ratios(f16_layout(1, 64), 16))) EXPECT_EQ(c, Codec::exact);
}

TEST(Policy, PositionProtectsSinksAndRecentAndMeetsTheTarget) {
  const auto ratios = codec_ratios(f16_layout(1, 64), 16);
  for (double target : {0.9, 0.6, 0.45, 0.35, 0.2}) {
    PolicyParams p{PolicyKind::position, target, 1, 2};
    const std::size_t n = 20;
    const auto codecs = choose_codecs(p, position_importance(n, p), ratios);
    ASSERT_EQ(codecs.size(), n);
    EXPECT_EQ(codecs[0], Codec::exact);
    EXPECT_EQ(codecs[n - 1], Codec::exact);
    EXPECT_EQ(codecs[n - 2], Codec::exact);
    double total = 0;
    for (Codec c : codecs) total += ratios[static_cast<std::size_t>(c)];
    // The target holds whenever it is reachable with three exact chunks and the rest at kivi2.
    const double floor = (3.0 + (n - 3) * ratio(ratios, Codec::kivi2)) / n;
    EXPECT_LE(total / n, std::max(target, floor) + 1e-9) << target;
    // Older chunks are never kept at a finer codec than newer unprotected ones.
    for (std::size_t i = 2; i + 3 < n; ++i) EXPECT_GE(tolerance_level(codecs[i - 1]), tolerance_level(codecs[i])) << i;
  }
}

// Importance decides the rung: with random importances, a chunk is never on a finer rung than a
// less important one, the target holds, and the ladder uses its lower rungs only when it must.
TEST(Policy, TheLadderFollowsImportanceAndMeetsTheTarget) {
  const auto ratios = codec_ratios(f16_layout(4, 64), 64);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (double target : {0.8, 0.5, 0.35, 0.25, 0.15}) {
    PolicyParams p{PolicyKind::attention, target, 1, 1};
    const std::size_t n = 40;
    std::vector<float> imp(n);
    for (auto& x : imp) x = u(rng) * u(rng);
    const auto codecs = choose_codecs(p, imp, ratios);
    double total = 0;
    for (Codec c : codecs) total += ratio(ratios, c);
    const double floor = (2.0 + (n - 2) * ratio(ratios, Codec::kivi2)) / n;
    EXPECT_LE(total / n, std::max(target, floor) + 1e-9) << target;
    EXPECT_EQ(codecs.front(), Codec::exact);
    EXPECT_EQ(codecs.back(), Codec::exact);
    for (std::size_t i = 1; i + 1 < n; ++i) {
      EXPECT_TRUE(codecs[i] == Codec::exact || codecs[i] == Codec::kivi8 || codecs[i] == Codec::kivi4 ||
                  codecs[i] == Codec::kivi2);
      for (std::size_t j = 1; j + 1 < n; ++j) {
        if (imp[i] < imp[j]) {
          EXPECT_GE(tolerance_level(codecs[i]), tolerance_level(codecs[j])) << i << " " << j;
        }
      }
    }
  }
  // A loose target is met at 8 bits: nothing needs 2.
  PolicyParams loose{PolicyKind::position, 0.75, 1, 1};
  for (Codec c : choose_codecs(loose, position_importance(20, loose), ratios)) EXPECT_NE(c, Codec::kivi2);
  // Another ladder: ggml's formats.
  PolicyParams ggml{PolicyKind::position, 0.3, 1, 1, {Codec::q8_0, Codec::q4_0}};
  for (Codec c : choose_codecs(ggml, position_importance(20, ggml), ratios)) {
    EXPECT_TRUE(c == Codec::exact || c == Codec::q8_0 || c == Codec::q4_0) << codec_name(c);
  }
}

TEST(Policy, UniformPoliciesCompressEveryUnprotectedChunk) {
  const auto ratios = codec_ratios(f16_layout(1, 64), 16);
  PolicyParams p{PolicyKind::q4_0, 0.5, 1, 1};
  const auto codecs = choose_codecs(p, position_importance(5, p), ratios);
  EXPECT_EQ(codecs, (std::vector<Codec>{Codec::exact, Codec::q4_0, Codec::q4_0, Codec::q4_0, Codec::exact}));
  // A layout q4_0 cannot hold stays exact.
  const auto none = choose_codecs(p, position_importance(5, p), codec_ratios(f16_layout(1, 48), 16));
  for (Codec c : none) EXPECT_EQ(c, Codec::exact);
  PolicyParams k2{PolicyKind::kivi2, 0.5, 1, 1};
  EXPECT_EQ(choose_codecs(k2, position_importance(4, k2), ratios),
            (std::vector<Codec>{Codec::exact, Codec::kivi2, Codec::kivi2, Codec::exact}));
}

}  // namespace
}  // namespace llmd::kvstore
