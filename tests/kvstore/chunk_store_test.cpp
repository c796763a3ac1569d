// The chunk store over real files and SQLite, with synthetic KV states in llama.cpp's format:
// exact round trips, only changed chunks re-encoded, restart, model change, budgets, pinning,
// disk full (through the FileSystem seam), corrupt and orphaned files.
#include "kvstore/chunk_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

namespace fs = std::filesystem;

constexpr std::uint32_t kLayers = 2;
constexpr std::uint64_t kRowBytes = 128;  // 64 f16 elements

engine::KvStream make_cells(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  engine::KvStream s;
  for (std::size_t i = 0; i < n; ++i) s.cells.push_back({static_cast<engine::Pos>(i), {0}, {}});
  auto rows = [&] {
    engine::KvRows r;
    r.type = 1;  // f16
    r.row_bytes = kRowBytes;
    r.data.resize(n * kRowBytes);
    // Small finite f16 values: random low bytes, a fixed high byte (exponent well in range).
    for (std::size_t b = 0; b < r.data.size(); b += 2) {
      r.data[b] = static_cast<std::uint8_t>(rng());
      r.data[b + 1] = static_cast<std::uint8_t>(0x30 + (rng() % 8));
    }
    return r;
  };
  for (std::uint32_t l = 0; l < kLayers; ++l) {
    s.k.push_back(rows());
    s.v.push_back(rows());
  }
  return s;
}

std::vector<std::uint8_t> state_of(const engine::KvStream& cells) {
  engine::SeqState st;
  st.streams.push_back(cells);
  return engine::serialize_seq_state(st);
}

std::vector<engine::Token> tokens(std::size_t n, engine::Token base = 1) {
  std::vector<engine::Token> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = base + static_cast<engine::Token>(i % 100);
  return t;
}

const engine::KvLayout& layout() {
  static const engine::KvLayout l = engine::layout_of(make_cells(1, 0), 0);
  return l;
}

std::uint64_t chunk_bytes(std::uint32_t cells) {  // an exact chunk's blob
  return 64 + cells * (4 + kLayers * 2 * kRowBytes);
}

// Injects write failures into the real file system.
class FailingFs : public FileSystem {
 public:
  Status write_file(const fs::path& p, std::span<const std::uint8_t> b) override {
    if (fail) return Error(Errc::resource_exhausted, "cannot write " + p.string() + ": No space left on device");
    return real->write_file(p, b);
  }
  Status read_file(const fs::path& p, std::uint64_t max, std::vector<std::uint8_t>& out) override {
    return real->read_file(p, max, out);
  }
  Status remove_file(const fs::path& p) override { return real->remove_file(p); }
  Status make_dirs(const fs::path& p) override { return real->make_dirs(p); }
  std::shared_ptr<FileSystem> real = real_file_system();
  bool fail = false;
};

ChunkStoreOptions options(const std::string& dir) {
  ChunkStoreOptions o;
  o.dir = dir;
  o.chunk_tokens = 64;
  return o;
}

std::unique_ptr<ChunkStore> open_store(ChunkStoreOptions o, const std::string& model = "model-a") {
  auto s = ChunkStore::open(std::move(o), layout(), model);
  EXPECT_TRUE(s) << s.error().to_string();
  return s ? std::move(*s) : nullptr;
}

std::uint64_t files_bytes(const fs::path& dir) {
  std::uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".kvc") n += e.file_size();
  }
  return n;
}

void expect_same_cells(const engine::KvStream& got, const engine::KvStream& want, std::size_t n) {
  ASSERT_EQ(got.cells.size(), n);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(got.cells[i].pos, want.cells[i].pos);
  for (std::uint32_t l = 0; l < kLayers; ++l) {
    ASSERT_TRUE(std::equal(got.k[l].data.begin(), got.k[l].data.end(), want.k[l].data.begin())) << "K layer " << l;
    ASSERT_TRUE(std::equal(got.v[l].data.begin(), got.v[l].data.end(), want.v[l].data.begin())) << "V layer " << l;
  }
}

// load() builds llama.cpp's state bytes; parsed back, they give the cells to compare.
struct Loaded : LoadResult {
  engine::KvStream cells;
};

Loaded load(ChunkStore& store, const std::string& session, std::span<const engine::Token> history) {
  std::vector<std::uint8_t> buffer(7, 0xee);  // reused buffers hold old bytes: only state_bytes count
  Loaded out;
  static_cast<LoadResult&>(out) = store.load(session, history, RestoreTarget{0, 1, 0}, buffer);
  if (out.state_bytes > 0) {
    auto st = engine::parse_seq_state(std::span(buffer.data(), out.state_bytes));
    EXPECT_TRUE(st) << st.error().to_string();
    if (st) {
      EXPECT_EQ(st->seq_id, 0);
      out.cells = st->streams[0];
    }
  }
  return out;
}

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
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto o = options(dir);
      o.chunk_tokens = 16;
      auto opened = ChunkStore::open(o, layout(), "model-a");
      if (!opened) _exit(3);
      for (std::size_t n = 40;; n = 40 + (n * 7 + 13) % 360) {
        (*opened)->write_back("ses_a", std::vector(toks.begin(), toks.begin() + static_cast<std::ptrdiff_t>(n)),
                              state_of(*engine::slice_cells(cells, 0, n)));
        (*opened)->flush();
      }
    }
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
