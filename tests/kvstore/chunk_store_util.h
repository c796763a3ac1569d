// Helpers of the chunk store tests: synthetic KV states in llama.cpp's format, stores over scratch
// directories, loads parsed back into cells, and a FileSystem that fails writes on request.
#pragma once

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "engine/ggml_types.h"
#include "kvstore/chunk_store.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore::test_util {

namespace fs = std::filesystem;

constexpr std::uint32_t kLayers = 2;
constexpr std::uint64_t kRowBytes = 128;  // 64 f16 elements

inline engine::KvStream make_cells(std::size_t n, std::uint32_t seed) {
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

// n cells at positions first.., 2 layers, K and V rows of 64 f16 values each drawn from a normal
// distribution (stddev `scale`), V transposed or not: KV with realistic values for the codecs and
// the audit.
inline engine::KvStream normal_cells(std::size_t n, bool v_trans, std::uint32_t seed, engine::Pos first = 0,
                                     float scale = 1.0f) {
  const auto f16 = *engine::ggml_type_from_name("f16");
  const auto f32 = *engine::ggml_type_from_name("f32");
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  engine::KvStream s;
  s.v_trans = v_trans;
  for (std::size_t i = 0; i < n; ++i) s.cells.push_back({static_cast<engine::Pos>(first + i), {0}, {}});
  for (std::uint32_t l = 0; l < kLayers; ++l) {
    for (auto* side : {&s.k, &s.v}) {
      engine::KvRows r{f16, kRowBytes, side == &s.v && v_trans ? 2u : 0u, {}};
      std::vector<float> values(64 * n);
      for (auto& x : values) x = dist(rng);
      r.data.resize(kRowBytes * n);
      EXPECT_TRUE(engine::convert_rows(f32, values.data(), f16, r.data.data(), static_cast<std::int64_t>(n), 64));
      side->push_back(std::move(r));
    }
  }
  return s;
}

inline std::vector<std::uint8_t> state_of(const engine::KvStream& cells) {
  engine::SeqState st;
  st.streams.push_back(cells);
  return engine::serialize_seq_state(st);
}

inline std::vector<engine::Token> tokens(std::size_t n, engine::Token base = 1) {
  std::vector<engine::Token> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = base + static_cast<engine::Token>(i % 100);
  return t;
}

inline const engine::KvLayout& layout() {
  static const engine::KvLayout l = engine::layout_of(make_cells(1, 0), 0);
  return l;
}

inline std::uint64_t chunk_bytes(std::uint32_t cells) {  // an exact chunk's blob
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
  Result<std::vector<DirEntry>> list_dir(const fs::path& p) override { return real->list_dir(p); }
  Status remove_tree(const fs::path& p) override { return real->remove_tree(p); }
  Status remove_empty_dir(const fs::path& p) override { return real->remove_empty_dir(p); }
  Result<std::uint64_t> free_bytes(const fs::path& p) override { return real->free_bytes(p); }
  std::shared_ptr<FileSystem> real = real_file_system();
  bool fail = false;
};

// The real file system whose chunk writes wait at a gate: holds the store's thread inside a
// write-back so that the write-backs after it stay queued.
class GateFs : public FailingFs {
 public:
  Status write_file(const fs::path& p, std::span<const std::uint8_t> b) override {
    {
      std::unique_lock lock(mu_);
      entered_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
    }
    return FailingFs::write_file(p, b);
  }
  void wait_entered() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, open_ = false;
};

inline ChunkStoreOptions options(const std::string& dir) {
  ChunkStoreOptions o;
  o.dir = dir;
  o.chunk_tokens = 64;
  o.disk_reserve = 0;  // the tests of the reserve set their own (the scratch disk's free space is not theirs)
  return o;
}

inline std::unique_ptr<ChunkStore> open_store(ChunkStoreOptions o, const std::string& model = "model-a") {
  auto s = ChunkStore::open(std::move(o), layout(), model);
  EXPECT_TRUE(s) << s.error().to_string();
  return s ? std::move(*s) : nullptr;
}

inline std::uint64_t files_bytes(const fs::path& dir) {
  std::uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".kvc") n += e.file_size();
  }
  return n;
}

inline void expect_same_cells(const engine::KvStream& got, const engine::KvStream& want, std::size_t n) {
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

inline Loaded load(ChunkStore& store, const std::string& session, std::span<const engine::Token> history,
                   std::optional<std::uint32_t> uid = std::nullopt, std::uint64_t lineage = 0) {
  std::vector<std::uint8_t> buffer(7, 0xee);  // reused buffers hold old bytes: only state_bytes count
  Loaded out;
  static_cast<LoadResult&>(out) = store.load(session, history, RestoreTarget{0, 1, 0}, buffer, uid, lineage);
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

// The chunk file of index `idx` in a session's directory.
inline fs::path chunk_file(const std::string& dir, const std::string& session, std::uint32_t idx) {
  for (const auto& e : fs::directory_iterator(fs::path(dir) / session)) {
    if (e.path().filename().string().rfind(std::to_string(idx) + "-", 0) == 0) return e.path();
  }
  ADD_FAILURE() << "no chunk " << idx << " of " << session;
  return {};
}

// Copies another file's bytes over a chunk file, keeping the name the index knows it by.
inline void copy_bytes(const fs::path& from, const fs::path& over) {
  fs::copy_file(from, over, fs::copy_options::overwrite_existing);
}

}  // namespace llmd::kvstore::test_util
