// Issue 13, bug 5 for the KV tier: the chunk store never eats the last `disk_reserve` bytes of its
// file system. Through the FileSystem seam (a small disk whose free space and ENOSPC follow the
// files really written, others' use, a quota that statvfs does not show) and on a real 4 MiB tmpfs.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "kvstore/chunk_store.h"
#include "tests/kvstore/chunk_store_util.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

using namespace test_util;  // NOLINT(google-build-using-namespace)

constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kBlock = 4096;

std::uint64_t blocks(std::uint64_t bytes) { return (bytes + kBlock - 1) / kBlock * kBlock; }

// A disk of `capacity` bytes holding the real files under `root` (in 4 KiB blocks, the index
// included) and `other` bytes of other programs' files: free_bytes() says what is left, and a
// write that does not fit fails with ENOSPC, as on a real file system. `quota`: free_bytes()
// reports plenty while writes still fail (a quota, which statvfs does not show).
class SmallDiskFs : public FileSystem {
 public:
  SmallDiskFs(fs::path root, std::uint64_t capacity) : root_(std::move(root)), capacity_(capacity) {}

  std::uint64_t used() const {
    std::uint64_t n = 0;
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(root_, ec)) {
      if (e.is_regular_file(ec)) n += blocks(e.file_size(ec));
    }
    return n;
  }
  std::uint64_t free() const {
    const std::uint64_t taken = used() + other;
    return taken >= capacity_ ? 0 : capacity_ - taken;
  }

  Status write_file(const fs::path& p, std::span<const std::uint8_t> b) override {
    if (blocks(b.size()) > free()) return Error(Errc::resource_exhausted, "cannot write " + p.string() + ": No space left on device");
    ++writes;
    return real_->write_file(p, b);
  }
  Status read_file(const fs::path& p, std::uint64_t max, std::vector<std::uint8_t>& out) override {
    return real_->read_file(p, max, out);
  }
  Status remove_file(const fs::path& p) override { return real_->remove_file(p); }
  Status make_dirs(const fs::path& p) override { return real_->make_dirs(p); }
  Result<std::vector<DirEntry>> list_dir(const fs::path& p) override { return real_->list_dir(p); }
  Status remove_tree(const fs::path& p) override { return real_->remove_tree(p); }
  Status remove_empty_dir(const fs::path& p) override { return real_->remove_empty_dir(p); }
  Result<std::uint64_t> free_bytes(const fs::path&) override { return quota ? std::uint64_t{1} << 40 : free(); }

  std::uint64_t other = 0;
  bool quota = false;
  int writes = 0;

 private:
  fs::path root_;
  std::uint64_t capacity_;
  std::shared_ptr<FileSystem> real_ = real_file_system();
};

std::string name(int i) { return "ses_" + std::to_string(i); }

void write_session(ChunkStore& store, int i) {
  store.write_back(name(i), tokens(128, i), state_of(make_cells(128, 300 + i)));
  store.flush();
}

std::size_t kvc_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.path().extension() == ".kvc" ? 1 : 0;
  return n;
}

// More sessions than the disk can hold beside the reserve: the store evicts its oldest chunks so
// that the newest always reach the disk and the reserve is never used. (Before: free space went
// to 0, then every write failed.)
TEST(ChunkStoreDisk, TheReserveStaysFreeAsTheStoreFillsASmallDisk) {
  const std::string dir = test::scratch_dir();
  auto disk = std::make_shared<SmallDiskFs>(dir, 4 * kMiB);
  auto o = options(dir);
  o.fs = disk;
  o.disk_reserve = kMiB;
  o.ram_budget = 0;
  auto store = open_store(o);
  constexpr int kCount = 60;  // 120 chunks of ~33 KB: about twice what fits
  for (int i = 0; i < kCount; ++i) {
    write_session(*store, i);
    EXPECT_GE(disk->free(), kMiB) << "after session " << i;
    EXPECT_EQ(store->residency(name(i)).disk_chunks, 2u) << "session " << i;
  }
  const auto st = store->stats();
  EXPECT_EQ(st.write_errors, 0u) << st.last_error;
  EXPECT_EQ(st.reserve_skips, 0u);
  EXPECT_EQ(store->residency(name(0)).chunks, 0u);  // evicted for the newer ones
  const auto r = load(*store, name(kCount - 1), tokens(128, kCount - 1));
  EXPECT_EQ(r.tokens, 128u);
  EXPECT_EQ(r.from_disk, 2u);
  expect_same_cells(r.cells, make_cells(128, 300 + kCount - 1), 128);
}

// Other programs fill the disk into the reserve: the store gives its own files back and keeps new
// chunks in RAM only, without an error; once there is room again, chunks go to disk again.
TEST(ChunkStoreDisk, WhenOthersFillTheDiskChunksStayInRamAndTheStoreGivesItsSpaceBack) {
  const std::string dir = test::scratch_dir();
  auto disk = std::make_shared<SmallDiskFs>(dir, 4 * kMiB);
  auto o = options(dir);
  o.fs = disk;
  o.disk_reserve = kMiB;
  auto store = open_store(o);
  for (int i = 0; i < 10; ++i) write_session(*store, i);
  ASSERT_EQ(store->stats().disk.chunks, 20u);

  disk->other = 4 * kMiB - disk->used() - 100 * 1024;  // 100 KiB left
  write_session(*store, 10);
  auto st = store->stats();
  EXPECT_EQ(st.write_errors, 0u) << st.last_error;
  EXPECT_GE(st.reserve_skips, 1u);
  EXPECT_EQ(store->residency(name(10)).disk_chunks, 0u);
  EXPECT_EQ(store->residency(name(10)).ram_chunks, 2u);
  EXPECT_EQ(st.disk.bytes, 0u);  // given back: the reserve is for sessions.db, not for a cache
  EXPECT_EQ(kvc_files(dir), 0u);
  const auto r = load(*store, name(10), tokens(128, 10));
  EXPECT_EQ(r.tokens, 128u);
  expect_same_cells(r.cells, make_cells(128, 310), 128);

  disk->other = 0;
  write_session(*store, 11);
  EXPECT_EQ(store->residency(name(11)).disk_chunks, 2u);
  EXPECT_EQ(store->stats().write_errors, 0u);
}

// A write refused with ENOSPC although the free space said there was room (a quota; another
// program's write in between): the store evicts its own chunks, retries once and succeeds.
// (Before: every such write was a write error and the newest chunks never reached the disk.)
TEST(ChunkStoreDisk, EnospcIsMetByEvictingAndRetrying) {
  const std::string dir = test::scratch_dir();
  auto disk = std::make_shared<SmallDiskFs>(dir, 3 * kMiB);
  disk->quota = true;
  auto o = options(dir);
  o.fs = disk;
  o.disk_reserve = kMiB;
  o.ram_budget = 0;
  auto store = open_store(o);
  for (int i = 0; i < 50; ++i) {
    write_session(*store, i);
    EXPECT_EQ(store->residency(name(i)).disk_chunks, 2u) << "session " << i;
  }
  EXPECT_EQ(store->stats().write_errors, 0u) << store->stats().last_error;
  EXPECT_LE(disk->used(), 3 * kMiB);
  EXPECT_EQ(store->residency(name(0)).chunks, 0u);
}

// At start-up with the disk already inside the reserve, the store evicts its own chunks first.
TEST(ChunkStoreDisk, OpenGivesSpaceBackWhenTheReserveIsGone) {
  const std::string dir = test::scratch_dir();
  auto disk = std::make_shared<SmallDiskFs>(dir, 4 * kMiB);
  auto o = options(dir);
  o.fs = disk;
  o.disk_reserve = kMiB;
  {
    auto store = open_store(o);
    for (int i = 0; i < 20; ++i) write_session(*store, i);
  }
  const std::uint64_t chunks_before = kvc_files(dir);
  ASSERT_EQ(chunks_before, 40u);
  disk->other = 4 * kMiB - disk->used() - 300 * 1024;  // 300 KiB free: ~22 chunks short of the reserve
  auto store = open_store(o);
  EXPECT_GE(disk->free(), kMiB);
  EXPECT_LT(kvc_files(dir), chunks_before);
  EXPECT_GT(kvc_files(dir), 0u);  // only as many as needed
}

// A real file system: a 4 MiB tmpfs (mounting needs root; tests run as root in CI).
class Tmpfs {
 public:
  explicit Tmpfs(std::uint64_t bytes) : dir_(test::scratch_dir()) {
    const std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) == 0) {
      mounted_ = true;
    } else {
      why_ = std::strerror(errno);
    }
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  const std::string& dir() const { return dir_; }
  std::uint64_t free() const {
    struct statvfs st {};
    EXPECT_EQ(::statvfs(dir_.c_str(), &st), 0);
    return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  }

 private:
  std::string dir_, why_;
  bool mounted_ = false;
};

TEST(ChunkStoreDisk, OnARealTinyTmpfsTheReserveHolds) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root (CI runs the tests as root)";
  Tmpfs tmpfs(4 * kMiB);
  if (!tmpfs.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << tmpfs.why();
  const std::string dir = tmpfs.dir() + "/kv";
  auto o = options(dir);
  o.disk_reserve = kMiB;
  o.ram_budget = 0;
  {
    auto store = open_store(o);
    for (int i = 0; i < 60; ++i) {
      write_session(*store, i);
      EXPECT_GE(tmpfs.free(), kMiB) << "after session " << i;
      EXPECT_EQ(store->residency(name(i)).disk_chunks, 2u) << "session " << i;
    }
    EXPECT_EQ(store->stats().write_errors, 0u) << store->stats().last_error;
  }
  {
    auto store = open_store(o);  // what is on disk restores exactly
    const auto r = load(*store, name(59), tokens(128, 59));
    EXPECT_EQ(r.tokens, 128u);
    EXPECT_EQ(r.bad, 0u);
    expect_same_cells(r.cells, make_cells(128, 359), 128);
  }

  // Another program takes the disk down to 100 KiB (the store starting empty, so that it has
  // nothing of its own to give back): chunks stay in RAM, without an error.
  fs::remove_all(dir);
  o.ram_budget = 64 * kMiB;
  auto store = open_store(o);
  const std::string other = tmpfs.dir() + "/other";
  {
    std::ofstream f(other, std::ios::binary);
    const std::string block(kBlock, 'x');
    while (tmpfs.free() > 100 * 1024 + kBlock && f.write(block.data(), block.size())) f.flush();
  }
  write_session(*store, 100);
  EXPECT_EQ(store->stats().write_errors, 0u) << store->stats().last_error;
  EXPECT_GE(store->stats().reserve_skips, 1u);
  EXPECT_EQ(store->residency(name(100)).ram_chunks, 2u);
  EXPECT_EQ(store->residency(name(100)).disk_chunks, 0u);
  EXPECT_EQ(load(*store, name(100), tokens(128, 100)).tokens, 128u);
  fs::remove(other);
  write_session(*store, 101);
  EXPECT_EQ(store->residency(name(101)).disk_chunks, 2u);
}

// Every file operation of the store goes through its FileSystem (issue 14): open()'s sweep of
// directories and files no index row names, and a dropped session's directory (before: straight
// std::filesystem calls, which a test's file system never saw).
class RecordingFs : public FailingFs {
 public:
  Status remove_file(const fs::path& p) override {
    removed_files.push_back(p);
    return FailingFs::remove_file(p);
  }
  Result<std::vector<DirEntry>> list_dir(const fs::path& p) override {
    listed.push_back(p);
    return FailingFs::list_dir(p);
  }
  Status remove_tree(const fs::path& p) override {
    removed_trees.push_back(p);
    return FailingFs::remove_tree(p);
  }
  Status remove_empty_dir(const fs::path& p) override {
    removed_dirs.push_back(p);
    return FailingFs::remove_empty_dir(p);
  }
  std::vector<fs::path> removed_files, listed, removed_trees, removed_dirs;
};

bool has(const std::vector<fs::path>& v, const fs::path& p) { return std::find(v.begin(), v.end(), p) != v.end(); }

TEST(ChunkStoreDisk, OpenSweepAndDropGoThroughTheFileSystem) {
  const std::string dir = test::scratch_dir();
  {
    auto store = open_store(options(dir));
    write_session(*store, 1);
  }
  const fs::path orphan = fs::path(dir) / "ses_orphan", stray = fs::path(dir) / name(1) / "7-99.kvc";
  fs::create_directories(orphan);
  std::ofstream(orphan / "0-1.kvc") << "x";
  std::ofstream(stray) << "x";

  auto recording = std::make_shared<RecordingFs>();
  auto o = options(dir);
  o.fs = recording;
  auto store = open_store(o);
  EXPECT_TRUE(has(recording->listed, dir));
  EXPECT_TRUE(has(recording->removed_trees, orphan));
  EXPECT_TRUE(has(recording->removed_files, stray));
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_FALSE(fs::exists(stray));
  EXPECT_EQ(load(*store, name(1), tokens(128, 1)).tokens, 128u);  // what the index names stays

  store->drop_session(name(1));
  store->flush();
  EXPECT_TRUE(has(recording->removed_dirs, fs::path(dir) / name(1)));
  EXPECT_FALSE(fs::exists(fs::path(dir) / name(1)));
}

}  // namespace
}  // namespace llmd::kvstore
