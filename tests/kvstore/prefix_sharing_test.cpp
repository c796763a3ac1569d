// Chunks shared within one uid (issue 15): a load for a key takes chunks of the uid's other keys
// whose token prefix hashes match the history, never another uid's; find_prefix() names the
// anonymous entry a request extends (never one it leaves); owners survive a reopen; retain_only()
// keeps anonymous entries; the per-uid limits drop the least recently used entries; shifted KV (a
// sliding window's lineage) matches only loads of its own lineage.
#include <gtest/gtest.h>

#include <filesystem>

#include "kvstore/chunk_store.h"
#include "tests/kvstore/chunk_store_util.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

using namespace test_util;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;

constexpr std::uint32_t kUidA = 1000, kUidB = 1001;

TEST(PrefixSharing, ALoadTakesTheSameUidsChunksOfTheSamePrefixAndNeverAnotherUids) {
  auto store = open_store(options(test::scratch_dir()));
  const auto cells = make_cells(150, 1);
  const auto toks = tokens(150);
  store->write_back("ses_a", toks, state_of(cells), {}, KeyOwner{kUidA, false});
  store->flush();

  // Another key of the same uid whose history begins with the same 128 tokens (two whole chunks).
  auto other = std::vector(toks.begin(), toks.begin() + 128);
  other.insert(other.end(), {5, 6, 7, 8});
  const Loaded shared = load(*store, "ses_b", other, kUidA);
  EXPECT_EQ(shared.tokens, 128u);
  EXPECT_EQ(shared.from_other, 2u);
  expect_same_cells(shared.cells, *engine::slice_cells(cells, 0, 128), 128);
  EXPECT_EQ(store->stats().chunks_from_other_keys, 2u);

  // The same history for another uid, or with no uid: nothing.
  EXPECT_EQ(load(*store, "ses_c", toks, kUidB).tokens, 0u);
  EXPECT_EQ(load(*store, "ses_b", toks).tokens, 0u);
  // A key whose own chunks match is served from them.
  const Loaded own = load(*store, "ses_a", toks, kUidA);
  EXPECT_EQ(own.tokens, 150u);
  EXPECT_EQ(own.from_other, 0u);
}

TEST(PrefixSharing, FindPrefixNamesTheEntryARequestExtendsNeverOneItLeaves) {
  auto store = open_store(options(test::scratch_dir()));
  const auto toks = tokens(150);
  store->write_back("pfx_a", toks, state_of(make_cells(150, 2)), {}, KeyOwner{kUidA, true});
  store->flush();

  auto longer = toks;
  longer.insert(longer.end(), {11, 12, 13});
  const PrefixLookup extends = store->find_prefix(kUidA, longer);
  EXPECT_EQ(extends.entry, "pfx_a");
  EXPECT_EQ(extends.entry_tokens, 150u);
  EXPECT_EQ(extends.covered, 150u);

  // A request that leaves the entry after its first chunk: the chunk is found (covered), but the
  // entry is not continued (its other chunks are another conversation's).
  auto leaves = std::vector(toks.begin(), toks.begin() + 70);
  leaves[69] = 4242;
  const PrefixLookup left = store->find_prefix(kUidA, leaves);
  EXPECT_EQ(left.entry, "");
  EXPECT_EQ(left.covered, 64u);

  EXPECT_EQ(store->find_prefix(kUidB, longer).covered, 0u);
  // A session is never continued as an entry, though its chunks count.
  store->write_back("ses_s", longer, state_of(make_cells(153, 2)), {}, KeyOwner{kUidA, false});
  store->flush();
  auto more = longer;
  more.push_back(99);
  const PrefixLookup with_session = store->find_prefix(kUidA, more);
  EXPECT_EQ(with_session.entry, "pfx_a");
  EXPECT_EQ(with_session.covered, 153u);
}

TEST(PrefixSharing, OwnersOutliveAReopenAndRetainKeepsAnonymousEntries) {
  const std::string dir = test::scratch_dir();
  const auto toks = tokens(100);
  {
    auto store = open_store(options(dir));
    store->write_back("pfx_a", toks, state_of(make_cells(100, 3)), {}, KeyOwner{kUidA, true});
    store->write_back("ses_gone", toks, state_of(make_cells(100, 3)), {}, KeyOwner{kUidA, false});
    store->flush();
  }
  auto store = open_store(options(dir));
  EXPECT_EQ(store->stats().prefix_entries, 1u);
  // As at start-up: the session store no longer has ses_gone; the anonymous entry is not a session.
  store->retain_only({});
  store->flush();
  EXPECT_EQ(store->residency("ses_gone").chunks, 0u);
  EXPECT_EQ(load(*store, "pfx_new", toks, kUidA).tokens, 100u);  // pfx_a's chunks, by its owner
  EXPECT_EQ(load(*store, "pfx_new", toks, kUidB).tokens, 0u);
}

TEST(PrefixSharing, APerUidLimitDropsTheLeastRecentlyUsedEntries) {
  auto o = options(test::scratch_dir());
  o.prefix_entries_per_uid = 2;
  auto store = open_store(o);
  for (int i = 0; i < 3; ++i) {
    const std::string key = "pfx_" + std::to_string(i);
    store->write_back(key, tokens(70, 1 + 100 * i), state_of(make_cells(70, 10 + i)), {}, KeyOwner{kUidA, true});
    store->flush();
  }
  // Another uid's entry does not count against uid A's limit, and is not dropped for it.
  store->write_back("pfx_b", tokens(70, 7), state_of(make_cells(70, 20)), {}, KeyOwner{kUidB, true});
  store->flush();
  EXPECT_EQ(store->residency("pfx_0").chunks, 0u);  // the oldest of uid A went
  EXPECT_GT(store->residency("pfx_1").chunks, 0u);
  EXPECT_GT(store->residency("pfx_2").chunks, 0u);
  EXPECT_GT(store->residency("pfx_b").chunks, 0u);
  EXPECT_EQ(store->stats().prefix_entries, 3u);
  EXPECT_EQ(store->stats().prefix_entries_dropped, 1u);

  // A byte limit: one entry's worth.
  auto b = options(test::scratch_dir());
  b.prefix_bytes_per_uid = 2 * chunk_bytes(64);
  auto small = open_store(b);
  small->write_back("pfx_x", tokens(70, 1), state_of(make_cells(70, 1)), {}, KeyOwner{kUidA, true});
  small->flush();
  small->write_back("pfx_y", tokens(70, 3), state_of(make_cells(70, 2)), {}, KeyOwner{kUidA, true});
  small->flush();
  EXPECT_EQ(small->residency("pfx_x").chunks, 0u);
  EXPECT_GT(small->residency("pfx_y").chunks, 0u);
}

// Identical chunks of one uid are stored once: the second key references the first one's copies
// (RAM blob and file), the status counts them once, and deleting either key keeps the other's
// chunks exact, also across a reopen (the shared file outlives its writer's directory entry).
TEST(PrefixSharing, IdenticalChunksAreStoredOnceAndOutliveTheKeyThatWroteThem) {
  const std::string dir = test::scratch_dir();
  const auto cells = make_cells(150, 7);
  const auto toks = tokens(150);
  // Key b holds the same first 128 tokens (and KV), then its own.
  auto b_toks = std::vector(toks.begin(), toks.begin() + 128);
  for (int i = 0; i < 30; ++i) b_toks.push_back(5000 + i);
  auto b_cells = *engine::slice_cells(cells, 0, 128);
  const auto b_tail = make_cells(158, 8);
  ASSERT_TRUE(engine::append_cells(b_cells, *engine::slice_cells(b_tail, 128, 158)));
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", toks, state_of(cells), {}, KeyOwner{kUidA, false});
    store->flush();
    const StoreStats before = store->stats();
    store->write_back("ses_b", b_toks, state_of(b_cells), {}, KeyOwner{kUidA, false});
    store->flush();
    const StoreStats after = store->stats();
    EXPECT_EQ(after.chunks_shared, 2u);
    EXPECT_EQ(after.chunks_encoded, before.chunks_encoded + 1);  // only b's own last chunk
    EXPECT_EQ(after.ram.shared_refs, 2u);
    EXPECT_EQ(after.disk.shared_refs, 2u);
    EXPECT_EQ(after.ram.bytes_saved, 2 * chunk_bytes(64));
    EXPECT_EQ(after.disk.bytes, before.disk.bytes + chunk_bytes(30));
    EXPECT_EQ(after.ram.chunks, 4u);
    EXPECT_EQ(files_bytes(fs::path(dir) / "ses_b"), chunk_bytes(30));  // its own chunk's file only

    // Another uid's identical chunks are its own.
    store->write_back("ses_c", toks, state_of(cells), {}, KeyOwner{kUidB, false});
    store->flush();
    EXPECT_EQ(store->stats().chunks_shared, 2u);

    store->drop_session("ses_a");
    store->flush();
    const Loaded b = load(*store, "ses_b", b_toks, kUidA);
    EXPECT_EQ(b.tokens, 158u);
    EXPECT_EQ(b.bad, 0u);
    expect_same_cells(b.cells, b_cells, 158);
    EXPECT_EQ(store->stats().ram.shared_refs, 0u);
    EXPECT_EQ(store->stats().disk.bytes, 2 * chunk_bytes(64) + chunk_bytes(30) + 2 * chunk_bytes(64) + chunk_bytes(22));
  }
  auto store = open_store(options(dir));  // from disk: ses_b's rows name files in ses_a's directory
  const Loaded b = load(*store, "ses_b", b_toks, kUidA);
  EXPECT_EQ(b.tokens, 158u);
  EXPECT_EQ(b.from_disk, 3u);
  expect_same_cells(b.cells, b_cells, 158);
  store->drop_session("ses_b");
  store->flush();
  EXPECT_FALSE(fs::exists(fs::path(dir) / "ses_a"));  // the last reference took the shared files
}

// A sliding window's shifted KV is not what a prefill of its tokens gives: written under a lineage,
// its chunks serve loads of that lineage only (the session, a fork of it, also after a reopen),
// never a prefill's (lineage 0) of the same tokens, nor find_prefix(); and a prefill's chunks
// never serve a lineage load.
TEST(PrefixSharing, ShiftedKvMatchesOnlyItsOwnLineage) {
  const std::string dir = test::scratch_dir();
  constexpr std::uint64_t kLineage = 0x9e3779b97f4a7c15ull;
  const auto toks = tokens(150);
  const auto cells = make_cells(150, 4);
  {
    auto store = open_store(options(dir));
    EXPECT_NE(store->lineage_seed(kLineage), store->chain_seed());
    EXPECT_NE(store->lineage_seed(kLineage), store->lineage_seed(kLineage ^ (1ull << 63)));
    EXPECT_EQ(store->lineage_seed(0), store->chain_seed());
    store->write_back("ses_slid", toks, state_of(cells), {}, KeyOwner{kUidA, false}, kLineage);
    store->write_back("pfx_plain", toks, state_of(make_cells(150, 5)), {}, KeyOwner{kUidA, true});
    store->flush();
    // The prefill's chunks are not shared with the shifted ones (other hashes): both kept.
    EXPECT_EQ(store->stats().chunks_shared, 0u);
    // A prefill of the same tokens, by key or by uid, gets the plain entry's KV, never the shifted.
    const Loaded plain = load(*store, "ses_other", toks, kUidA);
    EXPECT_EQ(plain.tokens, 150u);
    expect_same_cells(plain.cells, make_cells(150, 5), 150);
    EXPECT_EQ(load(*store, "ses_slid", toks).tokens, 0u) << "the key's own shifted chunks are not a prefill's";
    EXPECT_EQ(store->find_prefix(kUidA, toks).entry, "pfx_plain");
  }
  auto store = open_store(options(dir));
  // The lineage load: the session's own chunks, and a fork's (another key of the uid), after a reopen.
  const Loaded own = load(*store, "ses_slid", toks, kUidA, kLineage);
  EXPECT_EQ(own.tokens, 150u);
  expect_same_cells(own.cells, cells, 150);
  const Loaded fork = load(*store, "ses_fork", toks, kUidA, kLineage);
  EXPECT_EQ(fork.tokens, 150u);
  EXPECT_EQ(fork.from_other, 3u);
  expect_same_cells(fork.cells, cells, 150);
  // Another lineage, or another uid: nothing.
  EXPECT_EQ(load(*store, "ses_fork", toks, kUidA, kLineage + 1).tokens, 0u);
  EXPECT_EQ(load(*store, "ses_x", toks, kUidB, kLineage).tokens, 0u);
}

// A fork takes references to its original's chunks (share_key): no bytes copied, and the fork keeps
// them when the original goes on with other tokens or is deleted, also after a reopen.
TEST(PrefixSharing, AForkKeepsItsOriginalsChunksWhenTheOriginalMovesOn) {
  const std::string dir = test::scratch_dir();
  constexpr std::uint64_t kLineage = 77;
  const auto toks = tokens(150);
  const auto cells = make_cells(150, 6);
  {
    auto store = open_store(options(dir));
    store->write_back("ses_orig", toks, state_of(cells), {}, KeyOwner{kUidA, false}, kLineage);
    store->share_key("ses_orig", "ses_fork", KeyOwner{kUidA, false});
    store->flush();
    const StoreStats shared = store->stats();
    EXPECT_EQ(shared.chunks_shared, 3u);
    EXPECT_EQ(store->residency("ses_fork").chunks, 3u);
    // The original goes on with other tokens (its chunks replaced), then is deleted.
    store->write_back("ses_orig", tokens(150, 9), state_of(make_cells(150, 7)), {}, KeyOwner{kUidA, false}, kLineage);
    store->flush();
    store->drop_session("ses_orig");
    store->flush();
    const Loaded kept = load(*store, "ses_fork", toks, kUidA, kLineage);
    EXPECT_EQ(kept.tokens, 150u);
    EXPECT_EQ(kept.from_other, 0u);
    expect_same_cells(kept.cells, cells, 150);
  }
  auto store = open_store(options(dir));
  const Loaded again = load(*store, "ses_fork", toks, kUidA, kLineage);
  EXPECT_EQ(again.tokens, 150u);
  expect_same_cells(again.cells, cells, 150);
  // Not into a key that has chunks of its own, nor from a key that does not exist.
  store->share_key("ses_none", "ses_x", KeyOwner{kUidA, false});
  store->flush();
  EXPECT_EQ(store->residency("ses_x").chunks, 0u);
}

}  // namespace
}  // namespace llmd::kvstore
