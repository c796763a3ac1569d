// KV chunk encoding on synthetic cells: exact round trips, lossy codecs' size and error, and
// damaged or foreign blobs.
#include "kvstore/chunk.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "engine/ggml_types.h"
#include "tests/kvstore/chunk_store_util.h"

namespace llmd::kvstore {
namespace {

using engine::GgmlType;

// n cells, 2 layers, K and V rows of 64 f16 values each (V transposed or not), random values.
engine::KvStream cells(std::size_t n, bool v_trans, std::uint32_t seed = 1, engine::Pos first = 0) {
  return test_util::normal_cells(n, v_trans, seed, first);
}

engine::KvLayout layout_of(const engine::KvStream& s) { return engine::layout_of(s, 0); }

double mean_abs_diff_f16(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  const GgmlType f16 = *engine::ggml_type_from_name("f16"), f32 = *engine::ggml_type_from_name("f32");
  const std::size_t n = a.size() / 2;
  std::vector<float> fa(n), fb(n);
  EXPECT_TRUE(engine::convert_rows(f16, a.data(), f32, fa.data(), 1, static_cast<std::int64_t>(n)));
  EXPECT_TRUE(engine::convert_rows(f16, b.data(), f32, fb.data(), 1, static_cast<std::int64_t>(n)));
  double d = 0;
  for (std::size_t i = 0; i < n; ++i) d += std::fabs(fa[i] - fb[i]);
  return d / static_cast<double>(n);
}

TEST(Chunk, ExactCodecsRoundTripBitForBit) {
  for (bool v_trans : {false, true}) {
    const auto s = cells(16, v_trans, 3, 32);
    for (Codec c : {Codec::exact, Codec::exact_zstd}) {
      auto blob = encode_chunk(s, layout_of(s), c);
      ASSERT_TRUE(blob) << blob.error().to_string();
      auto back = decode_chunk(*blob, layout_of(s));
      ASSERT_TRUE(back) << back.error().to_string();
      ASSERT_EQ(back->cells.size(), 16u);
      EXPECT_EQ(back->cells[0].pos, 32);
      EXPECT_EQ(back->cells[15].pos, 47);
      for (int l = 0; l < 2; ++l) {
        EXPECT_EQ(back->k[l].data, s.k[l].data);
        EXPECT_EQ(back->v[l].data, s.v[l].data);
      }
      auto info = inspect_chunk(*blob);
      ASSERT_TRUE(info);
      EXPECT_EQ(info->codec, c);
      EXPECT_EQ(info->n_cells, 16u);
      EXPECT_EQ(info->first_pos, 32);
    }
  }
}

TEST(Chunk, LossyCodecsShrinkWithBoundedError) {
  const auto s = cells(32, false);
  const auto exact = encode_chunk(s, layout_of(s), Codec::exact);
  const auto q8 = encode_chunk(s, layout_of(s), Codec::q8_0);
  const auto q4 = encode_chunk(s, layout_of(s), Codec::q4_0);
  ASSERT_TRUE(exact && q8 && q4);
  EXPECT_LT(q8->size(), exact->size() * 55 / 100);
  EXPECT_LT(q4->size(), exact->size() * 30 / 100);
  auto d8 = decode_chunk(*q8, layout_of(s));
  auto d4 = decode_chunk(*q4, layout_of(s));
  ASSERT_TRUE(d8 && d4);
  const double e8 = mean_abs_diff_f16(d8->k[0].data, s.k[0].data);
  const double e4 = mean_abs_diff_f16(d4->k[0].data, s.k[0].data);
  EXPECT_GT(e8, 0.0);
  EXPECT_LT(e8, 0.02);  // values ~N(0,1): q8_0 keeps about 2 decimal digits
  EXPECT_GT(e4, e8);
  EXPECT_LT(e4, 0.2);
  EXPECT_EQ(d8->k[0].data.size(), s.k[0].data.size());  // back in the layout's type
}

TEST(Chunk, DamageAnywhereIsDetected) {
  const auto s = cells(8, true);
  for (Codec c : {Codec::exact, Codec::exact_zstd, Codec::q4_0}) {
    const auto blob = *encode_chunk(s, layout_of(s), c);
    for (std::size_t i = 0; i < blob.size(); i += 7) {
      auto bad = blob;
      bad[i] ^= 0x10;
      auto r = decode_chunk(bad, layout_of(s));
      ASSERT_FALSE(r) << "flip at " << i << " went unnoticed (" << codec_name(c) << ")";
      EXPECT_EQ(r.error().code(), Errc::corrupt);
    }
    for (std::size_t n = 0; n < blob.size(); n += 5) {
      EXPECT_FALSE(decode_chunk(std::span(blob.data(), n), layout_of(s))) << "truncated to " << n;
    }
  }
}

// Format 2: the header carries the prefix hash it was given, under the checksum (so it cannot be
// changed without the blob reading as corrupt); blobs of format 1 (without it) are refused.
TEST(Chunk, ThePrefixHashIsInTheCheckedHeader) {
  const auto s = cells(4, false);
  const std::uint64_t hash = 0x0123456789abcdefull;
  for (Codec c : {Codec::exact, Codec::exact_zstd, Codec::q8_0}) {
    const auto blob = *encode_chunk(s, layout_of(s), c, hash);
    EXPECT_EQ(inspect_chunk(blob)->prefix_hash, hash);
    std::vector<std::uint8_t> buffer, scratch;
    const auto layout = layout_of(s);  // the writer keeps a reference to it
    engine::SeqStateWriter out(buffer, layout, 0, 1, 0, 4);
    auto info = decode_chunk_into(blob, layout, out, 0, scratch);
    ASSERT_TRUE(info) << info.error().to_string();
    EXPECT_EQ(info->prefix_hash, hash);
    for (std::size_t i = 56; i < 64; ++i) {
      auto other = blob;
      other[i] ^= 0x01;
      auto r = inspect_chunk(other);
      ASSERT_FALSE(r) << "byte " << i;
      EXPECT_EQ(r.error().code(), Errc::corrupt);
    }
    auto v1 = blob;
    v1[4] = 1;
    v1[5] = 0;
    auto r = inspect_chunk(v1, Verify::header_only);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("unknown version 1"), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(inspect_chunk(*encode_chunk(s, layout_of(s), Codec::exact))->prefix_hash, 0u);
}

TEST(Chunk, AnotherLayoutIsRefused) {
  const auto s = cells(4, false);
  const auto blob = *encode_chunk(s, layout_of(s), Codec::exact);
  const auto other = cells(4, true);
  auto r = decode_chunk(blob, layout_of(other));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_NE(layout_id(layout_of(s)), layout_id(layout_of(other)));
  EXPECT_FALSE(encode_chunk(s, layout_of(other), Codec::exact));  // cells that do not match the layout
  EXPECT_FALSE(encode_chunk(engine::KvStream{}, layout_of(s), Codec::exact));
}

// Chunks decoded straight into a state being built, with V cell-major and transposed: parsed
// back, the state holds every cell for the destination sequence with the original rows.
TEST(Chunk, ChunksDecodeIntoAState) {
  for (const bool v_trans : {false, true}) {
    const auto a = cells(4, v_trans, 1, 0);
    const auto b = cells(4, v_trans, 2, 4);
    const auto layout = layout_of(a);
    std::vector<std::uint8_t> buffer(3, 0xee), scratch;  // a reused buffer: old bytes do not matter
    engine::SeqStateWriter out(buffer, layout, 3, 1, 0, 8);
    ASSERT_TRUE(decode_chunk_into(*encode_chunk(a, layout, Codec::exact), layout, out, 0, scratch));
    ASSERT_TRUE(decode_chunk_into(*encode_chunk(b, layout, Codec::exact_zstd), layout, out, 4, scratch));
    auto st = engine::parse_seq_state(out.bytes());
    ASSERT_TRUE(st) << st.error().to_string();
    EXPECT_EQ(st->seq_id, 3);
    ASSERT_EQ(st->n_cells(), 8u);
    EXPECT_EQ(st->streams[0].cells[7].seq_ids, std::vector<engine::SeqId>{3});
    EXPECT_EQ(st->streams[0].cells[5].pos, 5);
    auto whole = a;
    ASSERT_TRUE(engine::append_cells(whole, b));
    for (std::size_t l = 0; l < 2; ++l) {
      EXPECT_EQ(st->streams[0].k[l].data, whole.k[l].data) << l;
      EXPECT_EQ(st->streams[0].v[l].data, whole.v[l].data) << l;
    }
    // A chunk that does not fit the cells the state was built for.
    auto over = decode_chunk_into(*encode_chunk(b, layout, Codec::exact), layout, out, 6, scratch);
    ASSERT_FALSE(over);
    EXPECT_EQ(over.error().code(), Errc::invalid_argument);
  }
}

TEST(Chunk, CodecNames) {
  for (Codec c : kAllCodecs) EXPECT_EQ(*codec_from_name(codec_name(c)), c);
  EXPECT_EQ(codec_from_name("q2").error().code(), Errc::invalid_argument);
}

}  // namespace
}  // namespace llmd::kvstore
