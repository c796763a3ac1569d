// The sequence-state parser on synthetic states: exact round trips, slicing and joining, and
// hostile input. Round trips on states produced by llama.cpp itself are in state_test.cpp.
#include "engine/seq_state.h"

#include <cstring>
#include <random>

#include <gtest/gtest.h>

namespace llmd::engine {
namespace {

// A state of n cells, 3 layers, with distinct bytes everywhere so any mix-up shows.
SeqState synthetic(size_t n, bool v_trans, uint32_t ext = 0) {
  SeqState st;
  st.seq_id = 2;
  st.cell_ext_bytes = ext;
  st.streams.resize(1);
  KvStream& s = st.streams[0];
  s.v_trans = v_trans;
  uint8_t counter = 1;
  for (size_t i = 0; i < n; ++i) {
    KvCell c;
    c.pos = static_cast<Pos>(i);
    c.seq_ids = {2};
    c.ext.assign(ext, static_cast<uint8_t>(i));
    s.cells.push_back(c);
  }
  for (int l = 0; l < 3; ++l) {
    KvRows k{1, 8, 0, {}};
    KvRows v{1, 12, v_trans ? 2u : 0u, {}};
    for (size_t i = 0; i < n * k.row_bytes; ++i) k.data.push_back(counter++);
    for (size_t i = 0; i < n * v.row_bytes; ++i) v.data.push_back(counter++);
    s.k.push_back(k);
    s.v.push_back(v);
  }
  return st;
}

TEST(SeqState, RoundTripIsBitExact) {
  for (bool v_trans : {false, true}) {
    for (uint32_t ext : {0u, 12u}) {
      const auto bytes = serialize_seq_state(synthetic(5, v_trans, ext));
      auto parsed = parse_seq_state(bytes, {ext});
      ASSERT_TRUE(parsed) << parsed.error().to_string();
      EXPECT_EQ(parsed->n_cells(), 5u);
      EXPECT_EQ(parsed->streams[0].v_trans, v_trans);
      EXPECT_EQ(serialize_seq_state(*parsed), bytes);
    }
  }
}

TEST(SeqState, TransposedValuesAreHeldCellMajor) {
  // Build the transposed bytes by hand: V of layer 0 has 6 dimensions of 2-byte elements.
  SeqState st = synthetic(3, true);
  const auto bytes = serialize_seq_state(st);
  auto parsed = parse_seq_state(bytes);
  ASSERT_TRUE(parsed);
  // Cell 1's V row must be exactly the row we put there, whatever the on-wire order.
  const auto& v0 = parsed->streams[0].v[0];
  EXPECT_EQ(std::vector<uint8_t>(v0.data.begin() + 12, v0.data.begin() + 24),
            std::vector<uint8_t>(st.streams[0].v[0].data.begin() + 12, st.streams[0].v[0].data.begin() + 24));
}

TEST(SeqState, EmptyStreamsAndMultipleStreams) {
  SeqState st = synthetic(4, false);
  st.streams.insert(st.streams.begin(), KvStream{});
  st.streams.push_back(KvStream{});
  const auto bytes = serialize_seq_state(st);
  auto parsed = parse_seq_state(bytes);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->streams.size(), 3u);
  EXPECT_EQ(parsed->active_stream(), 1);
  EXPECT_EQ(serialize_seq_state(*parsed), bytes);
}

TEST(SeqState, SliceAndJoinReassembleTheOriginal) {
  for (bool v_trans : {false, true}) {
    const SeqState st = synthetic(10, v_trans);
    const KvStream& s = st.streams[0];
    KvStream joined;
    for (size_t b = 0; b < 10; b += 4) {
      auto part = slice_cells(s, b, std::min<size_t>(b + 4, 10));
      ASSERT_TRUE(part);
      ASSERT_TRUE(append_cells(joined, *part));
    }
    SeqState again = st;
    again.streams[0] = joined;
    EXPECT_EQ(serialize_seq_state(again), serialize_seq_state(st));
  }
}

// A fragmented pool lists a sequence's cells out of position order; sorting moves each cell's
// rows with it and gives back exactly the ordered stream.
TEST(SeqState, CellsSortByPositionWithTheirRows) {
  for (bool v_trans : {false, true}) {
    const SeqState st = synthetic(10, v_trans);
    KvStream shuffled;
    for (auto [b, e] : {std::pair<size_t, size_t>{6, 10}, {0, 3}, {3, 6}}) {
      auto part = slice_cells(st.streams[0], b, e);
      ASSERT_TRUE(part);
      ASSERT_TRUE(append_cells(shuffled, *part));
    }
    ASSERT_EQ(shuffled.cells[0].pos, 6);
    sort_cells_by_position(shuffled);
    SeqState again = st;
    again.streams[0] = shuffled;
    EXPECT_EQ(serialize_seq_state(again), serialize_seq_state(st));
    sort_cells_by_position(shuffled);  // already in order: unchanged
    again.streams[0] = shuffled;
    EXPECT_EQ(serialize_seq_state(again), serialize_seq_state(st));
  }
}

TEST(SeqState, SliceOutOfRangeAndMismatchedJoinAreErrors) {
  const SeqState st = synthetic(4, false);
  EXPECT_EQ(slice_cells(st.streams[0], 3, 5).error().code(), Errc::invalid_argument);
  EXPECT_EQ(slice_cells(st.streams[0], 3, 2).error().code(), Errc::invalid_argument);
  KvStream other = synthetic(2, true).streams[0];
  KvStream dst = st.streams[0];
  EXPECT_EQ(append_cells(dst, other).error().code(), Errc::invalid_argument);
}

TEST(SeqState, LayoutDescribesRows) {
  const SeqState st = synthetic(2, true);
  const KvLayout l = layout_of(st.streams[0], 0);
  EXPECT_EQ(l.n_layer, 3u);
  EXPECT_TRUE(l.v_trans);
  EXPECT_EQ(l.bytes_per_cell(), 3u * (8 + 12));
  EXPECT_EQ(l.v_elem_bytes, std::vector<uint32_t>(3, 2));
}

TEST(SeqState, EveryTruncationIsACleanError) {
  for (bool v_trans : {false, true}) {
    const auto bytes = serialize_seq_state(synthetic(6, v_trans));
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto r = parse_seq_state(std::span(bytes.data(), n));
      ASSERT_FALSE(r) << "truncated to " << n;
      EXPECT_EQ(r.error().code(), Errc::corrupt);
    }
  }
}

TEST(SeqState, TrailingBytesAndWrongMagicAreRejected) {
  auto bytes = serialize_seq_state(synthetic(2, false));
  auto extra = bytes;
  extra.push_back(0);
  EXPECT_NE(parse_seq_state(extra).error().message().find("trailing"), std::string::npos);
  bytes[0] ^= 0xFF;
  EXPECT_NE(parse_seq_state(bytes).error().message().find("magic"), std::string::npos);
}

TEST(SeqState, HugeCountsDoNotAllocate) {
  // A header claiming 4 billion cells in a 20-byte buffer must fail on the size check.
  std::vector<uint8_t> b(20, 0);
  const uint32_t magic = kSeqStateMagic, n_stream = 1, cells = 0xFFFFFFFFu;
  std::memcpy(b.data(), &magic, 4);
  std::memcpy(b.data() + 8, &n_stream, 4);
  std::memcpy(b.data() + 12, &cells, 4);
  EXPECT_EQ(parse_seq_state(b).error().code(), Errc::corrupt);
}

TEST(SeqState, RandomCorruptionNeverCrashes) {
  const auto good = serialize_seq_state(synthetic(8, true));
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    auto b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    auto r = parse_seq_state(b);
    if (r) {
      EXPECT_EQ(serialize_seq_state(*r), b);  // whatever parses must round-trip
    }
  }
}

}  // namespace
}  // namespace llmd::engine
