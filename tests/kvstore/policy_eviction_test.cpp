// Tolerance policies and LCTRU eviction order (pure code).
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
  for (auto k : {PolicyKind::exact, PolicyKind::position, PolicyKind::q8_0, PolicyKind::q4_0}) {
    auto back = policy_from_name(policy_name(k));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, k);
  }
  auto bad = policy_from_name("zip");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("position"), std::string::npos);
}

TEST(Policy, CodecRatiosFollowTheTypes) {
  const auto r = codec_ratios(f16_layout(2, 64));
  EXPECT_DOUBLE_EQ(r[0], 1.0);
  EXPECT_NEAR(r[2], 34.0 / 64.0, 1e-9);  // q8_0: 34 bytes per 32 elements vs 64
  EXPECT_NEAR(r[3], 18.0 / 64.0, 1e-9);  // q4_0
  const auto odd = codec_ratios(f16_layout(1, 48));  // not whole 32-element blocks
  EXPECT_EQ(odd[2], 0.0);
  EXPECT_EQ(odd[3], 0.0);
}

TEST(Policy, ExactKeepsEverythingExact) {
  PolicyParams p;
  const auto imp = position_importance(10, p);
  for (Codec c : choose_codecs(p, imp, codec_ratios(f16_layout(1, 64)))) EXPECT_EQ(c, Codec::exact);
}

TEST(Policy, PositionProtectsSinksAndRecentAndMeetsTheTarget) {
  const auto ratios = codec_ratios(f16_layout(1, 64));
  for (double target : {0.9, 0.6, 0.45, 0.35}) {
    PolicyParams p{PolicyKind::position, target, 1, 2};
    const std::size_t n = 20;
    const auto codecs = choose_codecs(p, position_importance(n, p), ratios);
    ASSERT_EQ(codecs.size(), n);
    EXPECT_EQ(codecs[0], Codec::exact);
    EXPECT_EQ(codecs[n - 1], Codec::exact);
    EXPECT_EQ(codecs[n - 2], Codec::exact);
    double total = 0;
    for (Codec c : codecs) total += ratios[static_cast<std::size_t>(c)];
    // The target holds whenever it is reachable with three exact chunks and the rest at q4_0.
    const double floor = (3.0 + (n - 3) * ratios[3]) / n;
    EXPECT_LE(total / n, std::max(target, floor) + 1e-9) << target;
    // Older chunks are never kept at a finer codec than newer unprotected ones.
    for (std::size_t i = 2; i + 3 < n; ++i) EXPECT_GE(tolerance_level(codecs[i - 1]), tolerance_level(codecs[i])) << i;
  }
}

TEST(Policy, UniformPoliciesCompressEveryUnprotectedChunk) {
  const auto ratios = codec_ratios(f16_layout(1, 64));
  PolicyParams p{PolicyKind::q4_0, 0.5, 1, 1};
  const auto codecs = choose_codecs(p, position_importance(5, p), ratios);
  EXPECT_EQ(codecs, (std::vector<Codec>{Codec::exact, Codec::q4_0, Codec::q4_0, Codec::q4_0, Codec::exact}));
  // A layout q4_0 cannot hold stays exact.
  const auto none = choose_codecs(p, position_importance(5, p), codec_ratios(f16_layout(1, 48)));
  for (Codec c : none) EXPECT_EQ(c, Codec::exact);
}

}  // namespace
}  // namespace llmd::kvstore
