// Issue 13, bug 6 for the chunk index: kv/index.db is a cache, so damage to it (a garbage header,
// a truncated file, a page overwritten in the middle, a damaged -wal, another schema, corruption
// that SQLite reports while the store runs) never stops the store: it discards the index and its
// chunk files, starts empty and keeps serving.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "kvstore/chunk_index.h"
#include "kvstore/chunk_store.h"
#include "kvstore/sqlite_db.h"
#include "tests/kvstore/chunk_store_util.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

using namespace test_util;  // NOLINT(google-build-using-namespace)

constexpr int kSessions = 12;
constexpr std::uint32_t kChunkTokens = 4;
constexpr std::size_t kTokens = 160;  // 40 chunks a session: an index of several pages

std::string session_name(int i) { return "ses_with_a_long_name_to_fill_pages_" + std::to_string(i); }

ChunkStoreOptions small_chunks(const std::string& dir) {
  auto o = options(dir);
  o.chunk_tokens = kChunkTokens;
  return o;
}

// A store of kSessions sessions, closed cleanly (the WAL checkpointed into index.db).
std::string populated_dir() {
  const std::string dir = test::scratch_dir();
  auto store = open_store(small_chunks(dir));
  for (int i = 0; i < kSessions; ++i) {
    store->write_back(session_name(i), tokens(kTokens, i * 7), state_of(make_cells(kTokens, 100 + i)));
  }
  store->flush();
  return dir;
}

std::size_t kvc_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.path().extension() == ".kvc" ? 1 : 0;
  return n;
}

void overwrite(const fs::path& file, std::uint64_t at, std::size_t n, std::uint32_t seed) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f) << file;
  f.seekp(static_cast<std::streamoff>(at));
  std::mt19937 rng(seed);
  for (std::size_t i = 0; i < n; ++i) f.put(static_cast<char>(rng()));
}

// After the damage: the store opens, and serves and stores sessions as a fresh one would; a
// reopen finds an intact index holding what was written since.
void expect_store_works(const std::string& dir) {
  auto store = open_store(small_chunks(dir));
  ASSERT_TRUE(store);
  for (int i = 0; i < kSessions; ++i) {
    const auto r = load(*store, session_name(i), tokens(kTokens, i * 7));
    EXPECT_EQ(r.bad, 0u) << i;  // discarded with the index, not found bad one by one
    if (r.tokens > 0) expect_same_cells(r.cells, *engine::slice_cells(make_cells(kTokens, 100 + i), 0, r.tokens), r.tokens);
  }
  const auto cells = make_cells(100, 7);
  store->write_back("ses_new", tokens(100), state_of(cells));
  store->flush();
  EXPECT_EQ(store->stats().write_errors, 0u) << store->stats().last_error;
  store.reset();
  auto o = small_chunks(dir);
  o.ram_budget = 0;
  auto again = open_store(o);
  ASSERT_TRUE(again);
  const auto r = load(*again, "ses_new", tokens(100));
  EXPECT_EQ(r.tokens, 100u);
  expect_same_cells(r.cells, cells, 100);
}

// Damage that SQLite or the integrity check sees: the whole index and every chunk file go.
void expect_discarded(const std::string& dir) {
  {
    auto store = open_store(small_chunks(dir));
    ASSERT_TRUE(store) << "the store did not open over a damaged index";
    for (int i = 0; i < kSessions; ++i) EXPECT_EQ(store->residency(session_name(i)).chunks, 0u) << i;
    EXPECT_EQ(store->stats().disk.bytes, 0u);
    EXPECT_EQ(kvc_files(dir), 0u);
  }
  expect_store_works(dir);
}

TEST(ChunkIndexDamage, GarbageHeaderIsDiscarded) {
  const std::string dir = populated_dir();
  overwrite(fs::path(dir) / "index.db", 0, 100, 1);
  expect_discarded(dir);
}

TEST(ChunkIndexDamage, NotADatabaseAtAllIsDiscarded) {
  const std::string dir = populated_dir();
  test::write_file(dir + "/index.db", "this is not a database, it is a text file that happens to be here\n");
  expect_discarded(dir);
}

TEST(ChunkIndexDamage, TruncatedFileIsDiscarded) {
  const std::string dir = populated_dir();
  const fs::path db = fs::path(dir) / "index.db";
  const auto size = fs::file_size(db);
  ASSERT_GE(size, 4u * 4096) << "the index should span several pages";
  fs::resize_file(db, size / 2 + 1000);  // not even a whole number of pages
  expect_discarded(dir);
}

TEST(ChunkIndexDamage, PageOverwrittenInTheMiddleIsDiscarded) {
  const std::string dir = populated_dir();
  const fs::path db = fs::path(dir) / "index.db";
  const auto size = fs::file_size(db);
  ASSERT_GE(size, 4u * 4096) << "the index should span several pages";
  overwrite(db, (size / 4096 / 2) * 4096, 4096, 2);
  expect_discarded(dir);
}

TEST(ChunkIndexDamage, AnotherSchemaIsDiscarded) {
  const std::string dir = populated_dir();
  {
    auto db = Db::open(dir + "/index.db");
    ASSERT_TRUE(db) << db.error().to_string();
    ASSERT_TRUE((*db)->exec("DROP TABLE chunks; CREATE TABLE chunks(session TEXT, something_else BLOB)"));
  }
  expect_discarded(dir);
}

// kill -9 leaves a WAL beside the index; damaged, SQLite's frame checksums make it ignore the
// damaged frames and everything after them (the index rolls back: a cache may).
TEST(ChunkIndexDamage, DamagedWalIsSurvived) {
  for (const std::uint64_t at : {std::uint64_t{0}, std::uint64_t{32 + 24 + 100}}) {  // the WAL header; inside the first frame
    const std::string dir = test::scratch_dir();
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto opened = ChunkStore::open(small_chunks(dir), layout(), "model-a");
      if (!opened) _exit(3);
      for (int i = 0; i < kSessions; ++i) {
        (*opened)->write_back(session_name(i), tokens(kTokens, i * 7), state_of(make_cells(kTokens, 100 + i)));
      }
      (*opened)->flush();
      _exit(0);  // no destructor: the WAL is left as kill -9 leaves it
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    const fs::path wal = fs::path(dir) / "index.db-wal";
    ASSERT_TRUE(fs::exists(wal));
    ASSERT_GT(fs::file_size(wal), at + 200);
    overwrite(wal, at, 200, 3);
    expect_store_works(dir);
  }
}

// Corruption found while the store runs (here made with SQLite's own writable schema: the chunks
// table's root page points past the end of the file, which SQLite reports as "database disk image
// is malformed"): the store discards the index and its files, keeps the RAM tier, and stores new
// chunks in a fresh index.
TEST(ChunkIndexDamage, CorruptionAtRunTimeIsDiscardedAndTheStoreKeepsServing) {
  const std::string dir = test::scratch_dir();
  auto store = open_store(small_chunks(dir));
  const auto cells_a = make_cells(100, 1), cells_b = make_cells(100, 2), cells_c = make_cells(100, 3);
  store->write_back("ses_a", tokens(100, 1), state_of(cells_a));
  store->flush();
  ASSERT_GT(kvc_files(dir), 0u);
  {
    auto db = Db::open(dir + "/index.db", Db::Durability::process);
    ASSERT_TRUE(db) << db.error().to_string();
    auto q = (*db)->prepare("PRAGMA schema_version");
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->step());
    const std::int64_t version = q->column_int(0);
    ASSERT_TRUE((*db)->exec("PRAGMA writable_schema=ON; UPDATE sqlite_master SET rootpage = 100000 WHERE name = 'chunks'; "
                            "PRAGMA schema_version = " + std::to_string(version + 1) + "; PRAGMA writable_schema=OFF;"));
  }
  store->write_back("ses_b", tokens(100, 2), state_of(cells_b));  // its index update meets the damage
  store->flush();
  EXPECT_EQ(kvc_files(dir), 0u);
  EXPECT_EQ(store->stats().disk.bytes, 0u);
  auto a = load(*store, "ses_a", tokens(100, 1));  // RAM copies stay good
  EXPECT_EQ(a.tokens, 100u);
  expect_same_cells(a.cells, cells_a, 100);
  auto b = load(*store, "ses_b", tokens(100, 2));
  EXPECT_EQ(b.tokens, 100u);
  expect_same_cells(b.cells, cells_b, 100);

  store->write_back("ses_c", tokens(100, 3), state_of(cells_c));  // the fresh index takes it
  store->flush();
  EXPECT_GT(kvc_files(dir), 0u);
  store.reset();
  auto o = small_chunks(dir);
  o.ram_budget = 0;
  auto again = open_store(o);
  ASSERT_TRUE(again);
  auto c = load(*again, "ses_c", tokens(100, 3));
  EXPECT_EQ(c.tokens, 100u);
  expect_same_cells(c.cells, cells_c, 100);
  EXPECT_EQ(load(*again, "ses_a", tokens(100, 1)).tokens, 0u);
}

// Every codec survives a reopen of the index as itself (the codec column once kept only two bits,
// so kivi chunks came back as exact ones after a restart); a row whose codec is none llmd knows
// is not loaded.
TEST(ChunkIndexCodecs, EveryCodecReadsBackAsItselfAndUnknownOnesAreSkipped) {
  const fs::path path = fs::path(test::scratch_dir()) / "index.db";
  {
    auto opened = ChunkIndex::open(path, "id");
    ASSERT_TRUE(opened) << opened.error().to_string();
    IndexUpdate u;
    std::uint32_t i = 0;
    for (Codec c : kAllCodecs) u.put.push_back({"s", i++, 16, c, 7, "f" + std::to_string(i), c, 100});
    u.put.push_back({"s", i++, 16, static_cast<Codec>(99), 7, "bad", Codec::exact, 100});
    ASSERT_TRUE(opened->index->apply(u));
  }
  auto again = ChunkIndex::open(path, "id");
  ASSERT_TRUE(again) << again.error().to_string();
  ASSERT_EQ(again->rows.size(), kNumCodecs);
  for (const IndexRow& r : again->rows) {
    ASSERT_LT(r.idx, kNumCodecs);
    EXPECT_EQ(r.codec, kAllCodecs[r.idx]) << r.idx;
    EXPECT_EQ(r.disk_codec, kAllCodecs[r.idx]) << r.idx;
  }
}

}  // namespace
}  // namespace llmd::kvstore
