// The KV audit's judgement on synthetic KV: right copies pass, wrong values, wrong positions and a
// slot whose bookkeeping disagrees with its cells fail, chunks of another history are stale, and
// lossy codecs are judged by their own step.
#include "kvstore/kv_audit.h"

#include <random>

#include <gtest/gtest.h>

#include "engine/ggml_types.h"
#include "kvstore/chunk_store.h"
#include "tests/kvstore/chunk_store_util.h"

namespace llmd::kvstore {
namespace {

using engine::GgmlType;

constexpr std::uint32_t kChunk = 8;

// n cells at positions 0..n-1, 2 layers, K and V rows of 64 f16 values (magnitude ~ 10).
engine::KvStream cells(std::size_t n, std::uint32_t seed = 7) {
  return test_util::normal_cells(n, false, seed, 0, 10.0f);
}

using test_util::state_of;

// Adds `delta` to every value of layer 0's K rows of cells [from, to).
engine::KvStream perturbed(engine::KvStream s, std::size_t from, std::size_t to, float delta) {
  const GgmlType f16 = *engine::ggml_type_from_name("f16");
  const GgmlType f32 = *engine::ggml_type_from_name("f32");
  auto& rows = s.k[0];
  std::vector<float> v(64);
  for (std::size_t c = from; c < to; ++c) {
    EXPECT_TRUE(engine::convert_rows(f16, rows.data.data() + c * 128, f32, v.data(), 1, 64));
    for (auto& x : v) x += delta;
    EXPECT_TRUE(engine::convert_rows(f32, v.data(), f16, rows.data.data() + c * 128, 1, 64));
  }
  return s;
}

std::vector<engine::Token> tokens(std::size_t n) {
  std::vector<engine::Token> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<engine::Token>(10 + i * 7 % 50);
  return t;
}

// The store's chunks of `kv` for `toks`, every copy in RAM, encoded with `codec`.
std::vector<AuditChunkInput> chunks_of(const engine::KvStream& kv, const std::vector<engine::Token>& toks,
                                       Codec codec = Codec::exact) {
  std::vector<AuditChunkInput> out;
  std::uint64_t h = 0;
  for (std::size_t b = 0, i = 0; b < kv.cells.size(); b += kChunk, ++i) {
    const std::size_t e = std::min(kv.cells.size(), b + kChunk);
    h = token_prefix_hash(h, std::span(toks).subspan(b, e - b));
    auto slice = engine::slice_cells(kv, b, e);
    EXPECT_TRUE(slice);
    auto blob = encode_chunk(*slice, engine::layout_of(kv, 0), codec);
    EXPECT_TRUE(blob) << blob.error().to_string();
    out.push_back({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(e - b), h, {{"ram", std::move(*blob), {}}}});
  }
  return out;
}

TEST(KvAudit, RightCopiesAndResidentKvPass) {
  const auto kv = cells(20);
  const auto toks = tokens(20);
  const auto layout = engine::layout_of(kv, 0);
  auto r = audit_kv(layout, toks, state_of(kv), kChunk, 0, chunks_of(kv, toks),
                    AuditResidentInput{1, toks, state_of(kv)});
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->checked, 4u);  // three chunks, the resident KV
  ASSERT_EQ(r->chunks.size(), 3u);
  EXPECT_EQ(r->chunks[2].n_cells, 4u);
  EXPECT_FALSE(r->chunks[2].stale);
  EXPECT_EQ(r->max_abs_diff, 0.0);
}

TEST(KvAudit, RoundingNoiseIsTolerated) {
  const auto kv = cells(16);
  const auto toks = tokens(16);
  const auto noisy = perturbed(kv, 0, 16, 0.05f);
  auto r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, chunks_of(noisy, toks), std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok());
  EXPECT_GT(r->max_abs_diff, 0.0);
}

TEST(KvAudit, WrongValuesFailAndAreNamed) {
  const auto kv = cells(24);
  const auto toks = tokens(24);
  auto stored = chunks_of(perturbed(kv, 9, 12, 4.0f), toks);  // three cells of chunk 1 are off
  auto r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, stored, std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->failed, 1u);
  EXPECT_TRUE(r->chunks[0].copies[0].compare.ok);
  EXPECT_FALSE(r->chunks[1].copies[0].compare.ok);
  EXPECT_NE(r->chunks[1].copies[0].compare.error.find("differ"), std::string::npos);
  EXPECT_TRUE(r->chunks[2].copies[0].compare.ok);
}

TEST(KvAudit, ChunksOfAnotherHistoryAreStaleNotCompared) {
  const auto kv = cells(16);
  auto toks = tokens(16);
  auto stored = chunks_of(perturbed(kv, 0, 16, 9.0f), toks);
  toks[3] += 1;  // the session's history is not the one the chunks were made for
  auto r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, stored, std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok());
  EXPECT_TRUE(r->chunks[0].stale);
  EXPECT_TRUE(r->chunks[1].stale);  // chained: everything after the change
  EXPECT_EQ(r->checked, 0u);
}

TEST(KvAudit, ASlotHoldingOtherCellsThanItsBookkeepingSaysFails) {
  const auto kv = cells(16);
  const auto toks = tokens(16);
  // The engine says the slot holds 16 tokens; it holds only the first 10 cells.
  auto short_kv = engine::slice_cells(kv, 0, 10);
  ASSERT_TRUE(short_kv);
  auto r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, {}, AuditResidentInput{0, toks, state_of(*short_kv)});
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok());
  EXPECT_NE(r->resident->compare.error.find("holds 10 cells"), std::string::npos) << r->resident->compare.error;
  // The same cells at positions moved by one (the KV of other positions): wrong.
  auto moved = kv;
  for (auto& c : moved.cells) c.pos += 1;
  r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, {}, AuditResidentInput{0, toks, state_of(moved)});
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok());
}

TEST(KvAudit, UnreadableCopiesFail) {
  const auto kv = cells(8);
  const auto toks = tokens(8);
  auto stored = chunks_of(kv, toks);
  stored[0].copies.push_back({"disk", {}, "checksum mismatch"});
  stored[0].copies[0].blob[100] ^= 0x55;  // the RAM copy is damaged too
  auto r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, stored, std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->failed, 2u);
}

TEST(KvAudit, LossyCodecsAreJudgedByTheirStepAndSoIsWhatFollowsThem) {
  const auto kv = cells(24);
  const auto toks = tokens(24);
  auto stored = chunks_of(kv, toks, Codec::q4_0);
  auto r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, stored, std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok());
  EXPECT_GT(r->max_abs_diff, 0.1);  // well beyond what an exact chunk may differ by
  // An exact chunk after a q4_0 one carries the q4_0 step of what it was computed over.
  auto mixed = chunks_of(kv, toks, Codec::q4_0);
  auto later = chunks_of(perturbed(kv, 16, 24, 1.0f), toks);
  mixed[2] = later[2];
  r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, mixed, std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok());
  // Alone, the same exact chunk is wrong.
  r = audit_kv(engine::layout_of(kv, 0), toks, state_of(kv), kChunk, 0, later, std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok());
}

TEST(KvAudit, AReferenceThatIsNotTheHistoryIsAnError) {
  const auto kv = cells(8);
  EXPECT_FALSE(audit_kv(engine::layout_of(kv, 0), tokens(9), state_of(kv), kChunk, 0, {}, std::nullopt));
  EXPECT_FALSE(audit_kv(engine::layout_of(kv, 0), tokens(8), std::vector<std::uint8_t>{1, 2, 3}, kChunk, 0, {}, std::nullopt));
}

}  // namespace
}  // namespace llmd::kvstore
