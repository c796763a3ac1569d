// The write-back queue's byte bound (issue 14): a stream of sessions written back while the
// store's thread is held up keeps the queued write-backs under the bound by dropping the oldest of
// sessions not in use (counted); sessions in use keep theirs; a dropped session has nothing stored
// (its next restore recomputes) and is stored again by its next write-back.
#include <gtest/gtest.h>

#include "kvstore/chunk_store.h"
#include "tests/kvstore/chunk_store_util.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

using namespace test_util;  // NOLINT(google-build-using-namespace)

constexpr std::size_t kCells = 128;

std::string name(int i) { return "ses_" + std::to_string(i); }
// What one queued write-back of kCells cells holds: its state and its tokens.
std::uint64_t op_bytes() { return state_of(make_cells(kCells, 0)).size() + kCells * sizeof(engine::Token); }

void write_back(ChunkStore& store, int i) { store.write_back(name(i), tokens(kCells, i), state_of(make_cells(kCells, 100 + i))); }

struct Gated {
  std::shared_ptr<GateFs> fs = std::make_shared<GateFs>();
  std::unique_ptr<ChunkStore> store;
};

// A store whose queue holds one write-back, its thread held inside the write-back of ses_0.
Gated gated_store() {
  Gated g;
  auto o = options(test::scratch_dir());
  o.fs = g.fs;
  o.write_back_queue_bytes = op_bytes();
  g.store = open_store(o);
  write_back(*g.store, 0);
  g.fs->wait_entered();
  return g;
}

TEST(WriteBackBound, AStreamOfSessionsStaysUnderTheBoundAndDroppedOnesAreRecomputed) {
  Gated g = gated_store();
  ChunkStore& store = *g.store;
  const std::uint64_t bound = store.options().write_back_queue_bytes;
  for (int i = 1; i <= 10; ++i) {
    write_back(store, i);
    const StoreStats s = store.stats();
    EXPECT_LE(s.pending_bytes, bound) << "after " << name(i);
    EXPECT_EQ(s.writebacks_dropped, static_cast<std::uint64_t>(i - 1)) << "after " << name(i);
  }
  EXPECT_EQ(store.stats().pending_bytes, op_bytes());  // the newest is queued
  g.fs->open();
  store.flush();
  const StoreStats s = store.stats();
  EXPECT_EQ(s.writebacks_dropped, 9u);
  EXPECT_EQ(s.write_backs, 2u);  // ses_0 (being written) and ses_10 (the newest)
  EXPECT_EQ(s.pending_bytes, 0u);
  for (int i : {0, 10}) {
    auto r = load(store, name(i), tokens(kCells, i));
    EXPECT_EQ(r.tokens, kCells) << name(i);
    expect_same_cells(r.cells, make_cells(kCells, 100 + i), kCells);
  }
  // A dropped write-back left nothing: the session's next restore recomputes it all (its tokens
  // are the truth), and its next write-back is stored as any.
  for (int i = 1; i <= 9; ++i) EXPECT_EQ(load(store, name(i), tokens(kCells, i)).tokens, 0u) << name(i);
  write_back(store, 3);
  store.flush();
  auto r = load(store, name(3), tokens(kCells, 3));
  EXPECT_EQ(r.tokens, kCells);
  expect_same_cells(r.cells, make_cells(kCells, 103), kCells);
}

// A session in use (pinned: its turn runs, or its restore waits for its write-back) keeps its
// queued write-back beyond the bound; once unpinned it is dropped first.
TEST(WriteBackBound, SessionsInUseKeepTheirWriteBacks) {
  Gated g = gated_store();
  ChunkStore& store = *g.store;
  store.pin(name(1));
  store.pin(name(2));
  write_back(store, 1);
  write_back(store, 2);
  EXPECT_EQ(store.stats().pending_bytes, 2 * op_bytes());  // both in use: over the bound
  EXPECT_EQ(store.stats().writebacks_dropped, 0u);
  write_back(store, 3);  // not in use: the only one that may go
  EXPECT_EQ(store.stats().writebacks_dropped, 1u);
  EXPECT_EQ(store.stats().pending_bytes, 2 * op_bytes());
  store.unpin(name(2));  // no longer in use, and the queue is over its bound
  EXPECT_EQ(store.stats().writebacks_dropped, 2u);
  EXPECT_EQ(store.stats().pending_bytes, op_bytes());
  g.fs->open();
  store.flush();
  EXPECT_EQ(load(store, name(1), tokens(kCells, 1)).tokens, kCells);
  EXPECT_EQ(load(store, name(2), tokens(kCells, 2)).tokens, 0u);
  EXPECT_EQ(load(store, name(3), tokens(kCells, 3)).tokens, 0u);
  store.unpin(name(1));
  EXPECT_EQ(store.stats().writebacks_dropped, 2u);
}

// Under the default bound (256 MiB) a handful of queued write-backs are all kept.
TEST(WriteBackBound, TheDefaultBoundKeepsAFewStates) {
  auto fs = std::make_shared<GateFs>();
  auto o = options(test::scratch_dir());
  EXPECT_EQ(o.write_back_queue_bytes, 256ull << 20);
  o.fs = fs;
  auto store = open_store(o);
  for (int i = 0; i < 6; ++i) write_back(*store, i);
  fs->wait_entered();
  EXPECT_EQ(store->stats().writebacks_dropped, 0u);
  fs->open();
  store->flush();
  EXPECT_EQ(store->stats().write_backs, 6u);
}

}  // namespace
}  // namespace llmd::kvstore
