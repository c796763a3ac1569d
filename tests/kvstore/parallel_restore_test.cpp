// A restore's chunks decoded by several threads (ChunkStoreOptions::restore_threads): the state
// built is byte for byte the one-thread state, from RAM, from disk and from both; a bad chunk ends
// the plan at the same place whichever thread meets it; chunks read from disk still move to RAM.
#include <gtest/gtest.h>

#include <fstream>

#include "kvstore/chunk_store.h"
#include "tests/kvstore/chunk_store_util.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

using namespace test_util;  // NOLINT(google-build-using-namespace)

constexpr std::size_t kCells = 1000;  // 16 chunks of 64, the last partial

std::vector<std::uint8_t> state_bytes(ChunkStore& store, const std::string& session,
                                      std::span<const engine::Token> history, LoadResult& r) {
  std::vector<std::uint8_t> buffer;
  r = store.load(session, history, RestoreTarget{0, 1, 0}, buffer);
  buffer.resize(r.state_bytes);
  return buffer;
}

TEST(ParallelRestore, EveryThreadCountBuildsTheSameStateFromRamAndDisk) {
  const auto cells = make_cells(kCells, 3);
  const auto toks = tokens(kCells);
  std::vector<std::uint8_t> want;
  for (unsigned threads : {1u, 2u, 3u, 4u}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    const std::string dir = test::scratch_dir();
    auto o = options(dir);
    o.restore_threads = threads;
    {
      auto store = open_store(o);
      store->write_back("ses_a", toks, state_of(cells));
      store->flush();
      LoadResult r;
      const auto ram = state_bytes(*store, "ses_a", toks, r);
      EXPECT_EQ(r.tokens, kCells);
      EXPECT_EQ(r.from_ram, 16u);
      EXPECT_EQ(r.bad, 0u);
      if (want.empty()) {
        want = ram;
        expect_same_cells(load(*store, "ses_a", toks).cells, cells, kCells);
      }
      EXPECT_EQ(ram, want);
    }
    // Reopened: every chunk comes from disk, and those read move to RAM for the next load.
    auto store = open_store(o);
    LoadResult r;
    EXPECT_EQ(state_bytes(*store, "ses_a", toks, r), want);
    EXPECT_EQ(r.from_disk, 16u);
    EXPECT_GT(r.read_ms + r.decode_ms, 0.0);
    EXPECT_EQ(state_bytes(*store, "ses_a", toks, r), want);
    EXPECT_EQ(r.from_ram, 16u);
    EXPECT_EQ(store->stats().bad_chunks, 0u);
  }
}

TEST(ParallelRestore, ABadChunkEndsThePlanAtTheSamePlaceWithAnyThreadCount) {
  const auto cells = make_cells(kCells, 4);
  const auto toks = tokens(kCells);
  for (unsigned threads : {1u, 2u, 4u}) {
    for (std::uint32_t bad : {0u, 1u, 9u, 15u}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + ", bad chunk " + std::to_string(bad));
      const std::string dir = test::scratch_dir();
      auto o = options(dir);
      o.restore_threads = threads;
      o.ram_budget = 0;  // from disk, where the damage is
      {
        auto store = open_store(o);
        store->write_back("ses_a", toks, state_of(cells));
      }
      {
        std::fstream f(chunk_file(dir, "ses_a", bad), std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(300);
        f.put('\x5a');
      }
      auto store = open_store(o);
      auto r = load(*store, "ses_a", toks);
      EXPECT_EQ(r.tokens, bad * 64u);
      EXPECT_EQ(r.bad, 1u);
      if (bad > 0) expect_same_cells(r.cells, cells, bad * 64u);
      store->flush();
      EXPECT_EQ(store->residency("ses_a").chunks, bad);  // the bad chunk and those after it are gone
    }
  }
}

}  // namespace
}  // namespace llmd::kvstore
