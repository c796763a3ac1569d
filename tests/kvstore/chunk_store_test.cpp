// The chunk store over real files and SQLite, with synthetic KV states in llama.cpp's format:
// exact round trips, only changed chunks re-encoded, restart, model change, budgets, pinning,
// disk full (through the FileSystem seam), corrupt and orphaned files.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>

#include "kvstore/chunk_store.h"
#include "kvstore/sqlite_db.h"
#include "tests/kvstore/chunk_store_util.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

using namespace test_util;  // NOLINT(google-build-using-namespace)

TEST(ChunkStore, WriteBackThenLoadIsExactAndValidatedByTokens) {
  auto store = open_store(options(test::scratch_dir()));
  const auto cells = make_cells(150, 1);
  const auto toks = tokens(150);
  store->write_back("ses_a", toks, state_of(cells));
  store->flush();

  auto r = load(*store, "ses_a", toks);
  EXPECT_EQ(r.tokens, 150u);
  EXPECT_EQ(r.from_ram, 3u);
  expect_same_cells(r.cells, cells, 150);

  auto longer = toks;
  longer.insert(longer.end(), {7, 8, 9});
  EXPECT_EQ(load(*store, "ses_a", longer).tokens, 150u);  // the rest is recomputed by the caller

  auto changed = toks;
  changed[100] = 99999;  // chunk 1 (64..127) no longer matches; neither does anything after it
  EXPECT_EQ(load(*store, "ses_a", changed).tokens, 64u);
  EXPECT_EQ(load(*store, "ses_a", std::span(toks).first(100)).tokens, 64u);  // only whole chunks that fit
  EXPECT_EQ(load(*store, "ses_other", toks).tokens, 0u);

  const auto res = store->residency("ses_a");
  EXPECT_EQ(res.chunks, 3u);
  EXPECT_EQ(res.tokens, 150u);
  EXPECT_EQ(res.disk_chunks, 3u);
  EXPECT_EQ(res.chunks_by_codec[static_cast<std::size_t>(Codec::exact)], 3u);
}

TEST(ChunkStore, OnlyNewOrChangedChunksAreEncoded) {
  auto store = open_store(options(test::scratch_dir()));
  auto cells = make_cells(170, 2);
  auto toks = tokens(170);
  store->write_back("ses_a", std::vector(toks.begin(), toks.begin() + 150),
                    state_of(*engine::slice_cells(cells, 0, 150)));
  store->flush();
  EXPECT_EQ(store->stats().chunks_encoded, 3u);
  store->write_back("ses_a", toks, state_of(cells));  // grows the partial last chunk
  store->flush();
  EXPECT_EQ(store->stats().chunks_encoded, 4u);
  auto r = load(*store, "ses_a", toks);
  EXPECT_EQ(r.tokens, 170u);
  expect_same_cells(r.cells, cells, 170);
  // A shorter history (a turn that was not kept) drops the chunks beyond it.
  store->write_back("ses_a", std::vector(toks.begin(), toks.begin() + 64), state_of(*engine::slice_cells(cells, 0, 64)));
  store->flush();
  EXPECT_EQ(store->residency("ses_a").chunks, 1u);
  EXPECT_EQ(files_bytes(store->options().dir), chunk_bytes(64));
}

TEST(ChunkStore, SurvivesReopenAndReadsFromDisk) {
  const std::string dir = test::scratch_dir();
  const auto cells = make_cells(130, 3);
  const auto toks = tokens(130);
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", toks, state_of(cells));
  }  // the destructor finishes queued write-backs
  auto o = options(dir);
  o.ram_budget = 0;
  auto store = open_store(o);
  EXPECT_EQ(store->stats().disk.chunks, 3u);
  auto r = load(*store, "ses_a", toks);
  EXPECT_EQ(r.tokens, 130u);
  EXPECT_EQ(r.from_disk, 3u);
  expect_same_cells(r.cells, cells, 130);
}

TEST(ChunkStore, AnotherModelInvalidatesEveryChunk) {
  const std::string dir = test::scratch_dir();
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", tokens(100), state_of(make_cells(100, 4)));
  }
  auto store = open_store(options(dir), "model-b");
  EXPECT_EQ(store->residency("ses_a").chunks, 0u);
  EXPECT_EQ(load(*store, "ses_a", tokens(100)).tokens, 0u);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "ses_a"));
}

TEST(ChunkStore, BudgetsHoldUnderAStreamOfSessionsAndPinnedSessionsStay) {
  auto o = options(test::scratch_dir());
  o.ram_budget = 5 * chunk_bytes(64);
  o.disk_budget = 8 * chunk_bytes(64) + 100;
  auto store = open_store(o);
  store->pin("ses_pinned");
  store->write_back("ses_pinned", tokens(128), state_of(make_cells(128, 5)));
  store->flush();
  for (int i = 0; i < 20; ++i) {
    store->write_back("ses_" + std::to_string(i), tokens(128, i), state_of(make_cells(128, 10 + i)));
    store->flush();
    const auto st = store->stats();
    EXPECT_LE(st.ram.bytes, o.ram_budget) << i;
    EXPECT_LE(st.disk.bytes, o.disk_budget) << i;
    EXPECT_LE(files_bytes(o.dir), o.disk_budget) << i;
  }
  EXPECT_EQ(store->residency("ses_pinned").ram_chunks, 2u);
  EXPECT_EQ(store->residency("ses_pinned").disk_chunks, 2u);
  EXPECT_EQ(store->residency("ses_19").chunks, 2u);  // the newest is kept...
  EXPECT_EQ(store->residency("ses_0").chunks, 0u);   // ...the oldest evicted
  EXPECT_EQ(load(*store, "ses_pinned", tokens(128)).tokens, 128u);
  store->unpin("ses_pinned");
}

TEST(ChunkStore, DiskFullIsReportedAndCorruptsNothing) {
  const std::string dir = test::scratch_dir();
  auto failing = std::make_shared<FailingFs>();
  const auto cells = make_cells(100, 6);
  const auto toks = tokens(100);
  {
    auto o = options(dir);
    o.fs = failing;
    auto store = open_store(o);
    store->write_back("ses_a", std::vector(toks.begin(), toks.begin() + 64), state_of(*engine::slice_cells(cells, 0, 64)));
    store->flush();
    failing->fail = true;
    store->write_back("ses_a", toks, state_of(cells));
    store->flush();
    const auto st = store->stats();
    EXPECT_EQ(st.write_errors, 1u);
    EXPECT_NE(st.last_error.find("No space left"), std::string::npos) << st.last_error;
    EXPECT_EQ(st.disk.chunks, 1u);
    // RAM still serves the whole history.
    auto r = load(*store, "ses_a", toks);
    EXPECT_EQ(r.tokens, 100u);
    expect_same_cells(r.cells, cells, 100);
  }
  // After a restart only what reached the disk is there, and it is intact.
  auto o = options(dir);
  o.ram_budget = 0;
  auto store = open_store(o);
  auto r = load(*store, "ses_a", toks);
  EXPECT_EQ(r.tokens, 64u);
  EXPECT_EQ(r.bad, 0u);
  for (const auto& e : fs::recursive_directory_iterator(dir)) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
}

TEST(ChunkStore, CorruptOrMissingFilesAreDroppedAndReported) {
  const std::string dir = test::scratch_dir();
  const auto toks = tokens(200);
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", toks, state_of(make_cells(200, 7)));
    store->write_back("ses_b", toks, state_of(make_cells(200, 8)));
  }
  // Flip a byte in chunk 1 of ses_a; delete chunk 2 of ses_b.
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "ses_a")) {
    if (e.path().filename().string().rfind("1-", 0) == 0) {
      std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(500);
      f.put('\x5a');
    }
  }
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "ses_b")) {
    if (e.path().filename().string().rfind("2-", 0) == 0) fs::remove(e.path());
  }
  auto o = options(dir);
  o.ram_budget = 0;
  auto store = open_store(o);
  auto a = load(*store, "ses_a", toks);
  EXPECT_EQ(a.tokens, 64u);
  EXPECT_EQ(a.bad, 1u);
  auto b = load(*store, "ses_b", toks);
  EXPECT_EQ(b.tokens, 128u);
  EXPECT_EQ(b.bad, 1u);
  store->flush();
  EXPECT_EQ(store->stats().bad_chunks, 2u);
  EXPECT_EQ(store->residency("ses_a").chunks, 1u);  // the bad chunk and those after it are gone
  EXPECT_EQ(store->residency("ses_b").chunks, 2u);
}

// Intact chunks in the wrong place (two files swapped behind the index's back) pass their checksums
// but hold other positions: they are refused like corrupt ones.
TEST(ChunkStore, ChunksAtTheWrongPositionsAreRefused) {
  const std::string dir = test::scratch_dir();
  const auto toks = tokens(128);
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", toks, state_of(make_cells(128, 13)));
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "ses_a")) files.push_back(e.path());
  ASSERT_EQ(files.size(), 2u);
  const fs::path tmp = fs::path(dir) / "swap";
  fs::rename(files[0], tmp);
  fs::rename(files[1], files[0]);
  fs::rename(tmp, files[1]);
  auto o = options(dir);
  o.ram_budget = 0;
  auto store = open_store(o);
  auto r = load(*store, "ses_a", toks);
  EXPECT_EQ(r.tokens, 0u);
  EXPECT_EQ(r.bad, 1u);
  EXPECT_NE(store->stats().last_error.find("other positions"), std::string::npos) << store->stats().last_error;
}

// Issue 13, bug 7: another session's intact chunk files copied over a session's own (with the
// store closed) pass their checksums and hold the right positions, but were made for other
// tokens: each is a bad chunk, recomputed, never used.
TEST(ChunkStore, AnotherSessionsChunkFilesCopiedOverAreRefused) {
  const std::string dir = test::scratch_dir();
  const auto toks_a = tokens(128, 1), toks_b = tokens(128, 500);
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", toks_a, state_of(make_cells(128, 21)));
    store->write_back("ses_b", toks_b, state_of(make_cells(128, 22)));
  }
  for (std::uint32_t i = 0; i < 2; ++i) copy_bytes(chunk_file(dir, "ses_b", i), chunk_file(dir, "ses_a", i));
  for (const std::uint64_t ram : {0ull, 512ull << 20}) {  // whether a disk copy is then kept in RAM or not
    const std::string copy = test::scratch_dir();
    fs::copy(dir, copy, fs::copy_options::recursive);
    auto o = options(copy);
    o.ram_budget = ram;
    auto store = open_store(o);
    auto r = load(*store, "ses_a", toks_a);
    EXPECT_EQ(r.tokens, 0u) << "ram " << ram;
    EXPECT_EQ(r.bad, 1u) << "ram " << ram;
    store->flush();
    EXPECT_EQ(store->stats().bad_chunks, 1u);
    EXPECT_EQ(store->residency("ses_a").chunks, 0u);  // dropped, so the next write-back replaces them
    EXPECT_EQ(load(*store, "ses_a", toks_a).tokens, 0u);
    EXPECT_EQ(load(*store, "ses_b", toks_b).tokens, 128u);  // the source is untouched
  }
}

// A stale file: the session's own chunk from an earlier history (a turn that was later replaced)
// put back in place of the current one.
TEST(ChunkStore, AStaleChunkFileOfTheSameSessionIsRefused) {
  const std::string dir = test::scratch_dir();
  const auto cells_old = make_cells(128, 23), cells_new = make_cells(128, 24);
  auto toks_old = tokens(128), toks_new = tokens(128);
  for (std::size_t i = 64; i < 128; ++i) toks_new[i] += 1000;
  const fs::path saved = fs::path(test::scratch_dir()) / "old-chunk-1";
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", toks_old, state_of(cells_old));
    store->flush();
    fs::copy_file(chunk_file(dir, "ses_a", 1), saved);
    // Chunk 0's tokens are the same: only chunk 1 is rewritten (with its own KV).
    auto mixed = *engine::slice_cells(cells_old, 0, 64);
    ASSERT_TRUE(engine::append_cells(mixed, *engine::slice_cells(cells_new, 64, 128)));
    store->write_back("ses_a", toks_new, state_of(mixed));
  }
  copy_bytes(saved, chunk_file(dir, "ses_a", 1));
  auto o = options(dir);
  o.ram_budget = 0;
  auto store = open_store(o);
  auto r = load(*store, "ses_a", toks_new);
  EXPECT_EQ(r.tokens, 64u);
  EXPECT_EQ(r.bad, 1u);
  expect_same_cells(r.cells, *engine::slice_cells(cells_old, 0, 64), 64);
}

// The choice documented in chunk_store.h: a chunk's identity is the chained hash of the tokens it
// was made for (and the model), not the session, since the KV of a prefix is the same whichever
// session computed it. A copy between sessions with the same prefix is therefore the right KV,
// and loads (a later issue shares such chunks between a uid's sessions).
TEST(ChunkStore, ASameTokensChunkOfAnotherSessionIsTheRightKvAndLoads) {
  const std::string dir = test::scratch_dir();
  const auto toks = tokens(64);
  const auto cells = make_cells(64, 25);
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", toks, state_of(cells));
    store->write_back("ses_b", toks, state_of(cells));
  }
  copy_bytes(chunk_file(dir, "ses_b", 0), chunk_file(dir, "ses_a", 0));
  auto o = options(dir);
  o.ram_budget = 0;
  auto store = open_store(o);
  auto r = load(*store, "ses_a", toks);
  EXPECT_EQ(r.tokens, 64u);
  EXPECT_EQ(r.bad, 0u);
  expect_same_cells(r.cells, cells, 64);
}

// Chunks of an older format (an index whose identity names format v1, as every store made before
// the prefix hash joined the blob header) are invalidated at start-up, files and all.
TEST(ChunkStore, ChunksOfAnOlderFormatAreInvalidatedAtOpen) {
  const std::string dir = test::scratch_dir();
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", tokens(100), state_of(make_cells(100, 26)));
  }
  {
    auto db = Db::open(dir + "/index.db", Db::Durability::process);
    ASSERT_TRUE(db);
    ASSERT_TRUE((*db)->exec("UPDATE meta SET value = substr(value, 1, length(value) - 2) || 'v1' WHERE key = 'identity'"));
    ASSERT_EQ((*db)->changes(), 1);
  }
  auto store = open_store(options(dir));
  EXPECT_EQ(store->residency("ses_a").chunks, 0u);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "ses_a"));
  EXPECT_EQ(store->stats().bad_chunks, 0u);
}

// The read API of the KV audit: every chunk with its copies' blobs, checked; the prefix hashes
// follow the documented chain; damaged, misplaced or missing copies come back as their errors.
TEST(ChunkStore, StoredChunksListsEveryCopyCheckedForTheAudit) {
  const std::string dir = test::scratch_dir();
  const auto cells = make_cells(150, 27);
  const auto toks = tokens(150);
  auto store = open_store(options(dir));
  store->write_back("ses_a", toks, state_of(cells));  // not flushed: stored_chunks waits for it
  auto chunks = store->stored_chunks("ses_a");
  ASSERT_EQ(chunks.size(), 3u);
  std::uint64_t h = store->chain_seed();
  for (std::size_t i = 0; i < 3; ++i) {
    const StoredChunk& c = chunks[i];
    const std::size_t b = i * 64, e = std::min<std::size_t>(150, b + 64);
    h = token_prefix_hash(h, std::span(toks).subspan(b, e - b));
    EXPECT_EQ(c.index, i);
    EXPECT_EQ(c.first_pos, static_cast<engine::Pos>(b));
    EXPECT_EQ(c.n_cells, e - b);
    EXPECT_EQ(c.codec, Codec::exact);
    EXPECT_EQ(c.prefix_hash, h);
    ASSERT_TRUE(c.ram && *c.ram) << i;
    ASSERT_TRUE(c.disk && *c.disk) << i;
    EXPECT_EQ(**c.ram, **c.disk);
    auto decoded = decode_chunk(**c.disk, layout());
    ASSERT_TRUE(decoded);
    expect_same_cells(*decoded, *engine::slice_cells(cells, b, e), e - b);
  }
  EXPECT_TRUE(store->stored_chunks("ses_none").empty());
  store.reset();

  // Damage behind the store's back: chunk 0 flipped, chunk 1 another chunk's bytes, chunk 2 gone.
  {
    std::fstream f(chunk_file(dir, "ses_a", 0), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(300);
    f.put('\x33');
  }
  copy_bytes(chunk_file(dir, "ses_a", 2), chunk_file(dir, "ses_a", 1));
  fs::remove(chunk_file(dir, "ses_a", 2));
  auto again = open_store(options(dir));
  chunks = again->stored_chunks("ses_a");
  ASSERT_EQ(chunks.size(), 3u);
  for (const auto& c : chunks) {
    EXPECT_FALSE(c.ram) << c.index;  // nothing was loaded since the restart
    ASSERT_TRUE(c.disk) << c.index;
    ASSERT_FALSE(*c.disk) << c.index;
  }
  EXPECT_EQ(chunks[0].disk->error().code(), Errc::corrupt);
  EXPECT_NE(chunks[0].disk->error().message().find("checksum"), std::string::npos) << chunks[0].disk->error().message();
  EXPECT_EQ(chunks[1].disk->error().code(), Errc::corrupt);
  EXPECT_NE(chunks[1].disk->error().message().find("other positions"), std::string::npos);
  EXPECT_EQ(chunks[2].disk->error().code(), Errc::not_found);
  EXPECT_EQ(again->stats().bad_chunks, 0u);  // an audit reads; it neither counts nor drops

  // RAM only: no disk copy.
  auto o = options(test::scratch_dir());
  o.disk_budget = 0;
  auto ram_only = open_store(o);
  ram_only->write_back("ses_b", tokens(64), state_of(make_cells(64, 28)));
  chunks = ram_only->stored_chunks("ses_b");
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_TRUE(chunks[0].ram && *chunks[0].ram);
  EXPECT_FALSE(chunks[0].disk);
}

TEST(ChunkStore, OpenSweepsTornAndUnindexedFiles) {
  const std::string dir = test::scratch_dir();
  {
    auto store = open_store(options(dir));
    store->write_back("ses_a", tokens(64), state_of(make_cells(64, 9)));
  }
  test::write_file(dir + "/ses_a/0-77.kvc.tmp", "torn");
  test::write_file(dir + "/ses_a/5-78.kvc", "unindexed");
  fs::create_directories(dir + "/ses_gone");
  test::write_file(dir + "/ses_gone/0-79.kvc", "no such session");
  auto store = open_store(options(dir));
  EXPECT_FALSE(fs::exists(dir + "/ses_a/0-77.kvc.tmp"));
  EXPECT_FALSE(fs::exists(dir + "/ses_a/5-78.kvc"));
  EXPECT_FALSE(fs::exists(dir + "/ses_gone"));
  EXPECT_EQ(load(*store, "ses_a", tokens(64)).tokens, 64u);
  // Sessions the daemon no longer knows are dropped on request.
  store->retain_only({});
  store->flush();
  EXPECT_EQ(store->residency("ses_a").chunks, 0u);
  EXPECT_FALSE(fs::exists(dir + "/ses_a"));
}

// kill -9 at random moments of a stream of write-backs (a child process doing them as fast as it
// can): after every kill the store opens, serves only intact chunks, and they are exact.
TEST(ChunkStore, Kill9DuringWriteBacksLeavesAConsistentStore) {
  const std::string dir = test::scratch_dir();
  const auto cells = make_cells(400, 11);
  const auto toks = tokens(400);
  std::mt19937 rng(5);
  std::size_t served = 0;
  for (int round = 0; round < 8; ++round) {
    int committed[2];
    ASSERT_EQ(::pipe(committed), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(committed[0]);
      ::signal(SIGPIPE, SIG_IGN);  // odd rounds do not read the signal
      auto o = options(dir);
      o.chunk_tokens = 16;
      auto opened = ChunkStore::open(o, layout(), "model-a");
      if (!opened) _exit(3);
      for (std::size_t n = 40;; n = 40 + (n * 7 + 13) % 360) {
        (*opened)->write_back("ses_a", std::vector(toks.begin(), toks.begin() + static_cast<std::ptrdiff_t>(n)),
                              state_of(*engine::slice_cells(cells, 0, n)));
        (*opened)->flush();
        if (committed[1] >= 0) {
          (void)!::write(committed[1], "c", 1);
          ::close(committed[1]);
          committed[1] = -1;
        }
      }
    }
    ::close(committed[1]);
    // Odd rounds kill at a random moment from the start (opening included); even ones at a random
    // moment after the first commit, so a loaded machine cannot make every kill come before it.
    if (round % 2 == 0) {
      char c = 0;
      ASSERT_EQ(::read(committed[0], &c, 1), 1) << "the writer died before its first commit";
    }
    ::close(committed[0]);
    ::usleep(20'000 + rng() % 80'000);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself: " << status;

    auto o = options(dir);
    o.chunk_tokens = 16;
    o.ram_budget = 0;
    auto store = open_store(o);
    ASSERT_TRUE(store);
    const auto r = load(*store, "ses_a", toks);
    EXPECT_EQ(r.bad, 0u) << "round " << round;
    if (r.tokens > 0) expect_same_cells(r.cells, *engine::slice_cells(cells, 0, r.tokens), r.tokens);
    served += r.tokens;
    for (const auto& e : fs::recursive_directory_iterator(dir)) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  }
  EXPECT_GT(served, 0u);  // the kills did not always come before the first commit
}

// The swap-in plan weighs measured costs: when recomputing is cheaper than reading chunks, it
// loads less (here nothing); when reading is cheaper, everything that matches.
TEST(ChunkStore, LoadsOnlyWhatIsCheaperThanRecomputing) {
  auto o = options(test::scratch_dir());
  o.ram_budget = 0;  // every chunk comes from disk
  auto store = open_store(o);
  const auto toks = tokens(192);
  store->write_back("ses_a", toks, state_of(make_cells(192, 12)));
  store->flush();
  EXPECT_EQ(load(*store, "ses_a", toks).tokens, 192u);  // nothing measured yet: load
  ASSERT_GT(store->costs().disk_ms, 0.0);

  for (int i = 0; i < 20; ++i) store->report_recompute(1'000'000, 1e-3);  // recomputing is ~free
  auto cheap = load(*store, "ses_a", toks);
  EXPECT_EQ(cheap.matched, 3u);
  EXPECT_EQ(cheap.tokens, 0u);
  EXPECT_EQ(cheap.state_bytes, 0u);

  for (int i = 0; i < 40; ++i) store->report_recompute(1, 1e3);  // recomputing is very slow
  auto dear = load(*store, "ses_a", toks);
  EXPECT_EQ(dear.tokens, 192u);
  EXPECT_EQ(dear.from_disk, 3u);
}

TEST(ChunkStore, RejectsBadOptionsAndHostileSessionNames) {
  auto o = options(test::scratch_dir());
  o.chunk_tokens = 0;
  EXPECT_FALSE(ChunkStore::open(o, layout(), "m"));
  o.chunk_tokens = 64;
  o.policy.target_ratio = 0;
  EXPECT_FALSE(ChunkStore::open(o, layout(), "m"));
  auto store = open_store(options(test::scratch_dir()));
  store->write_back("../escape", tokens(64), state_of(make_cells(64, 1)));
  store->flush();
  EXPECT_EQ(store->stats().write_backs, 0u);
  // A state of another layout is refused with a reason.
  engine::KvStream other = make_cells(64, 1);
  other.k[0].row_bytes = 64;
  other.k[0].data.resize(64 * 64);
  store->write_back("ses_a", tokens(64), state_of(other));
  store->flush();
  EXPECT_EQ(store->residency("ses_a").chunks, 0u);
  EXPECT_FALSE(store->stats().last_error.empty());
}

}  // namespace
}  // namespace llmd::kvstore

namespace llmd::kvstore {
namespace {

// The store's own thread (write-backs) is named llmd-kvstore and takes the nice it is given
// (ChunkStoreOptions::writer_nice; none by default).
TEST(ChunkStore, ItsThreadIsNamedAndNiced) {
  auto o = test_util::options(test::scratch_dir());
  o.writer_nice = 7;
  auto store = test_util::open_store(o);
  store->write_back("ses_a", test_util::tokens(20), test_util::state_of(test_util::make_cells(20, 1)));
  store->flush();  // the thread has run an op (it names and nices itself first)
  std::optional<int> nice;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(t.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name != "llmd-kvstore") continue;
    std::ifstream stat(t.path() / "stat");
    std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    std::istringstream rest(all.substr(all.rfind(')') + 2));  // fields from the 3rd (state) on
    std::vector<std::string> f{std::istream_iterator<std::string>(rest), std::istream_iterator<std::string>()};
    ASSERT_GT(f.size(), 16u);
    nice = std::stoi(f[16]);  // field 19: nice
  }
  ASSERT_TRUE(nice.has_value()) << "no thread named llmd-kvstore";
  // Raising a thread's nice needs no privilege; lowering it below an inherited one does.
  const int inherited = ::getpriority(PRIO_PROCESS, 0);
  if (inherited <= 7) {
    EXPECT_EQ(*nice, 7);
  } else {
    EXPECT_TRUE(*nice == 7 || *nice == inherited) << *nice;
  }
}

}  // namespace
}  // namespace llmd::kvstore
