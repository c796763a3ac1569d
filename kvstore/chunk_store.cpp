// The chunk store (see chunk_store.h).
#include "kvstore/chunk_store.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <optional>

#include <spdlog/spdlog.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kvstore/eviction.h"
#include "kvstore/sqlite_db.h"

namespace llmd::kvstore {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
  session TEXT NOT NULL, idx INTEGER NOT NULL, n_cells INTEGER NOT NULL, codec INTEGER NOT NULL,
  prefix_hash INTEGER NOT NULL, file TEXT NOT NULL, disk_codec INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(session, idx)) WITHOUT ROWID;
)sql";

// Session ids become directory names: only [A-Za-z0-9_-], 1..64 characters.
bool safe_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// "<idx>-<gen>.kvc" -> gen, or 0.
std::uint64_t file_gen(const std::string& name) {
  const auto dash = name.find('-');
  const auto dot = name.rfind(".kvc");
  if (dash == std::string::npos || dot == std::string::npos || dot < dash) return 0;
  std::uint64_t g = 0;
  std::from_chars(name.data() + dash + 1, name.data() + dot, g);
  return g;
}

bool present(const auto& c) { return c.n_cells > 0 && (c.ram || !c.file.empty()); }

}  // namespace

std::uint64_t token_prefix_hash(std::uint64_t seed, std::span<const engine::Token> tokens) {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), seed);
}

ChunkStore::ChunkStore(ChunkStoreOptions options, const engine::KvLayout& layout)
    : opt_(std::move(options)), layout_(layout), ratios_(codec_ratios(layout)) {}

Result<std::unique_ptr<ChunkStore>> ChunkStore::open(ChunkStoreOptions options, const engine::KvLayout& layout,
                                                     const std::string& model_fingerprint) {
  if (options.dir.empty()) return Error(Errc::invalid_argument, "the chunk store needs a directory");
  if (options.chunk_tokens == 0 || options.chunk_tokens > kMaxChunkTokens) {
    return Error(Errc::invalid_argument, "chunk-tokens must be 1.." + std::to_string(kMaxChunkTokens));
  }
  if (!(options.policy.target_ratio > 0.0 && options.policy.target_ratio <= 1.0)) {
    return Error(Errc::invalid_argument, "the KV target ratio must be in (0, 1]");
  }
  if (!options.fs) options.fs = real_file_system();
  std::unique_ptr<ChunkStore> store(new ChunkStore(std::move(options), layout));
  LLMD_TRY_STATUS(store->init(model_fingerprint));
  store->thread_ = std::thread([s = store.get()] { s->run(); });
  return store;
}

Status ChunkStore::init(const std::string& model_fingerprint) {
  LLMD_TRY_STATUS(opt_.fs->make_dirs(opt_.dir));
  // The index is a cache of the sessions' tokens: a power failure that rolls back its latest
  // commits only costs recomputation (a row naming a removed file reads as a missing chunk).
  auto db = Db::open((opt_.dir / "index.db").string(), Db::Durability::process);
  if (!db) return db.error();
  db_ = std::move(*db);
  LLMD_TRY_STATUS(db_->exec(kSchema));

  // A different model or KV layout makes every chunk useless: forget them all.
  const std::string identity = model_fingerprint + "/" + std::to_string(layout_id(layout_)) + "/v1";
  std::string stored;
  {
    auto q = db_->prepare("SELECT value FROM meta WHERE key = 'identity'");
    if (!q) return q.error();
    auto row = q->step();
    if (!row) return row.error();
    if (*row) stored = q->column_text(0);
  }
  if (stored != identity) {
    if (!stored.empty()) spdlog::info("kvstore: the model or KV layout changed; every stored KV chunk is invalidated");
    Status reset = db_->transaction([&]() -> Status {
      LLMD_TRY_STATUS(db_->exec("DELETE FROM chunks"));
      auto up = db_->prepare("INSERT OR REPLACE INTO meta(key, value) VALUES('identity', ?)");
      if (!up) return up.error();
      return up->bind(1, identity).run();
    });
    if (!reset) return reset;
  }

  // The index, then a sweep of every file it does not name (torn writes, replaced chunks).
  std::uint64_t disk_used = 0;
  {
    auto q = db_->prepare("SELECT session, idx, n_cells, codec, prefix_hash, file, disk_codec, bytes FROM chunks");
    if (!q) return q.error();
    while (true) {
      auto row = q->step();
      if (!row) return row.error();
      if (!*row) break;
      const std::string session = q->column_text(0);
      const auto idx = static_cast<std::uint32_t>(q->column_int(1));
      if (!safe_name(session) || idx > (1u << 24)) continue;
      Session& s = sessions_[session];
      if (s.chunks.size() <= idx) s.chunks.resize(idx + 1);
      Chunk& c = s.chunks[idx];
      c.index = idx;
      c.n_cells = static_cast<std::uint32_t>(q->column_int(2));
      c.codec = static_cast<Codec>(q->column_int(3) & 3);
      c.prefix_hash = static_cast<std::uint64_t>(q->column_int(4));
      c.file = q->column_text(5);
      c.disk_codec = static_cast<Codec>(q->column_int(6) & 3);
      c.disk_bytes = static_cast<std::uint64_t>(q->column_int(7));
      disk_used += c.disk_bytes;
      gen_ = std::max(gen_, file_gen(c.file));
    }
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(opt_.dir, ec)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    auto it = sessions_.find(name);
    if (it == sessions_.end()) {
      std::filesystem::remove_all(entry.path(), ec);
      continue;
    }
    std::set<std::string> named;
    for (const auto& c : it->second.chunks) {
      if (!c.file.empty()) named.insert(c.file);
    }
    for (const auto& f : std::filesystem::directory_iterator(entry.path(), ec)) {
      if (named.count(f.path().filename().string()) == 0) (void)opt_.fs->remove_file(f.path());
    }
  }
  stats_.disk.bytes = disk_used;
  // A smaller disk budget than last time: evict down to it.
  if (disk_used > opt_.disk_budget) {
    std::vector<std::pair<std::string, Chunk>> evicted;
    make_disk_room(0, evicted);
    std::vector<std::pair<std::string, std::uint32_t>> rows;
    for (auto& [session, c] : evicted) {
      rows.emplace_back(session, c.index);
      (void)opt_.fs->remove_file(session_dir(session) / c.file);
    }
    remove_rows(rows);
  }
  spdlog::info("kvstore: {} sessions, {} bytes of KV chunks on disk ({})", sessions_.size(), stats_.disk.bytes,
               opt_.dir.string());
  return {};
}

ChunkStore::~ChunkStore() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ChunkStore::record_error(const std::string& message) {
  spdlog::warn("kvstore: {}", message);
  std::lock_guard lock(mu_);
  stats_.last_error = message;
}

void ChunkStore::write_back(std::string session, std::vector<engine::Token> tokens, std::vector<std::uint8_t> state,
                            std::vector<float> attention) {
  if (!safe_name(session)) return;
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    ++sessions_[session].pending;
    Op op;
    op.kind = Op::Kind::write_back;
    op.session = std::move(session);
    op.tokens = std::move(tokens);
    op.state = std::move(state);
    op.attention = std::move(attention);
    ops_.push_back(std::move(op));
  }
  cv_.notify_all();
}

void ChunkStore::drop_session(const std::string& session) {
  {
    std::lock_guard lock(mu_);
    Op op;
    op.kind = Op::Kind::drop;
    op.session = session;
    ops_.push_back(std::move(op));
  }
  cv_.notify_all();
}

void ChunkStore::retain_only(std::set<std::string> keep) {
  {
    std::lock_guard lock(mu_);
    Op op;
    op.kind = Op::Kind::retain;
    op.keep = std::move(keep);
    ops_.push_back(std::move(op));
  }
  cv_.notify_all();
}

void ChunkStore::flush() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return ops_.empty() && !busy_; });
}

void ChunkStore::pin(const std::string& session) {
  std::lock_guard lock(mu_);
  ++sessions_[session].pins;
}

void ChunkStore::unpin(const std::string& session) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(session);
  if (it != sessions_.end() && it->second.pins > 0) --it->second.pins;
}

void ChunkStore::run() {
  while (true) {
    Op op;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !ops_.empty(); });
      if (ops_.empty()) return;  // stopping, and everything queued is done
      op = std::move(ops_.front());
      ops_.pop_front();
      busy_ = true;
      stats_.pending = ops_.size();
    }
    switch (op.kind) {
      case Op::Kind::write_back: do_write_back(op); break;
      case Op::Kind::drop: do_drop(op.session, 0); break;
      case Op::Kind::drop_from: do_drop(op.session, op.from); break;
      case Op::Kind::retain: {
        std::vector<std::string> gone;
        {
          std::lock_guard lock(mu_);
          for (const auto& [id, s] : sessions_) {
            if (op.keep.count(id) == 0) gone.push_back(id);
          }
        }
        for (const auto& id : gone) do_drop(id, 0);
        break;
      }
    }
    {
      std::lock_guard lock(mu_);
      if (op.kind == Op::Kind::write_back) {
        auto it = sessions_.find(op.session);
        if (it != sessions_.end() && it->second.pending > 0) --it->second.pending;
      }
      busy_ = false;
      stats_.pending = ops_.size();
    }
    cv_.notify_all();
  }
}

bool ChunkStore::make_ram_room(std::uint64_t bytes) {
  if (bytes > opt_.ram_budget) return false;
  if (stats_.ram.bytes + bytes <= opt_.ram_budget) return true;
  std::vector<EvictionCandidate> cand;
  std::vector<Chunk*> where;
  for (auto& [id, s] : sessions_) {
    for (auto& c : s.chunks) {
      if (!c.ram) continue;
      cand.push_back({tolerance_level(c.codec), c.last_use, c.index, c.ram->size(), s.pins > 0});
      where.push_back(&c);
    }
  }
  const std::uint64_t need = stats_.ram.bytes + bytes - opt_.ram_budget;
  std::uint64_t freed = 0;
  for (std::size_t i : lctru_victims(cand, need)) {
    freed += where[i]->ram->size();
    stats_.ram.bytes -= where[i]->ram->size();
    where[i]->ram.reset();
  }
  return freed >= need;
}

bool ChunkStore::make_disk_room(std::uint64_t bytes, std::vector<std::pair<std::string, Chunk>>& evicted) {
  if (bytes > opt_.disk_budget) return false;
  if (stats_.disk.bytes + bytes <= opt_.disk_budget) return true;
  std::vector<EvictionCandidate> cand;
  std::vector<std::pair<const std::string*, Chunk*>> where;
  for (auto& [id, s] : sessions_) {
    for (auto& c : s.chunks) {
      if (c.file.empty()) continue;
      cand.push_back({tolerance_level(c.codec), c.last_use, c.index, c.disk_bytes, s.pins > 0});
      where.emplace_back(&id, &c);
    }
  }
  const std::uint64_t need = stats_.disk.bytes + bytes - opt_.disk_budget;
  std::uint64_t freed = 0;
  for (std::size_t i : lctru_victims(cand, need)) {
    Chunk& c = *where[i].second;
    freed += c.disk_bytes;
    stats_.disk.bytes -= c.disk_bytes;
    evicted.emplace_back(*where[i].first, c);
    c.file.clear();
    c.disk_bytes = 0;
  }
  return freed >= need;
}

void ChunkStore::remove_rows(const std::vector<std::pair<std::string, std::uint32_t>>& rows) {
  if (rows.empty()) return;
  auto st = db_->transaction([&]() -> Status {
    auto del = db_->prepare("DELETE FROM chunks WHERE session = ? AND idx = ?");
    if (!del) return del.error();
    for (const auto& [session, idx] : rows) {
      LLMD_TRY_STATUS(del->bind(1, session).bind(2, static_cast<std::int64_t>(idx)).run());
      del->reset();
    }
    return {};
  });
  if (!st) record_error("cannot update the chunk index: " + st.error().message());
}

Status ChunkStore::write_chunk_file(const std::string& session, Chunk& c, std::span<const std::uint8_t> blob,
                                    std::vector<std::pair<std::string, std::uint32_t>>& evicted_rows) {
  std::vector<std::pair<std::string, Chunk>> evicted;
  std::string name;
  {
    std::lock_guard lock(mu_);
    if (!make_disk_room(blob.size(), evicted)) {
      return Error(Errc::resource_exhausted, "the disk budget cannot hold the chunk");
    }
    stats_.disk.bytes += blob.size();  // reserved
    name = std::to_string(c.index) + "-" + std::to_string(++gen_) + ".kvc";
  }
  // An evicted chunk's row goes in the caller's transaction; its file can go now (a row without
  // its file reads as a missing chunk, should the process die before that commit).
  for (auto& [s, e] : evicted) {
    evicted_rows.emplace_back(s, e.index);
    (void)opt_.fs->remove_file(session_dir(s) / e.file);
  }
  Status st = opt_.fs->make_dirs(session_dir(session));
  if (st) st = opt_.fs->write_file(session_dir(session) / name, blob);
  if (!st) {
    std::lock_guard lock(mu_);
    stats_.disk.bytes -= blob.size();
    ++stats_.write_errors;
    return st;
  }
  c.file = name;
  c.disk_bytes = blob.size();
  return {};
}

void ChunkStore::do_write_back(Op& op) {
  auto state = engine::parse_seq_state(op.state, {layout_.cell_ext_bytes});
  if (!state) {
    record_error("write-back of " + op.session + ": " + state.error().message());
    return;
  }
  const int active = state->active_stream();
  if (active < 0) return;
  engine::KvStream& cells = state->streams[static_cast<std::size_t>(active)];
  engine::sort_cells_by_position(cells);
  if (!(engine::layout_of(cells, layout_.cell_ext_bytes) == layout_)) {
    record_error("write-back of " + op.session + ": the state does not have the store's KV layout");
    return;
  }
  const std::size_t n = cells.cells.size();
  if (n != op.tokens.size()) {
    record_error("write-back of " + op.session + ": " + std::to_string(n) + " cells for " +
                 std::to_string(op.tokens.size()) + " tokens");
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (cells.cells[i].pos != static_cast<engine::Pos>(i)) {
      record_error("write-back of " + op.session + ": positions are not 0..n-1");
      return;
    }
  }
  const std::uint32_t C = opt_.chunk_tokens;
  const std::size_t n_chunks = (n + C - 1) / C;
  std::vector<std::uint64_t> hashes(n_chunks);
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < n_chunks; ++i) {
    const std::size_t b = i * C, e = std::min(n, b + C);
    h = token_prefix_hash(h, std::span(op.tokens).subspan(b, e - b));
    hashes[i] = h;
  }
  auto importance = opt_.policy.kind == PolicyKind::attention
                        ? attention_chunk_importance(op.attention, n, C)
                        : std::vector<float>{};
  if (importance.empty()) importance = position_importance(n_chunks, opt_.policy);
  const auto codecs = choose_codecs(opt_.policy, importance, ratios_);

  // Which chunks are new or changed.
  std::vector<bool> keep(n_chunks, false);
  {
    std::lock_guard lock(mu_);
    const Session& s = sessions_[op.session];
    for (std::size_t i = 0; i < n_chunks && i < s.chunks.size(); ++i) {
      const Chunk& c = s.chunks[i];
      const std::size_t cells_i = std::min<std::size_t>(C, n - i * C);
      keep[i] = present(c) && c.prefix_hash == hashes[i] && c.n_cells == cells_i && c.codec == codecs[i];
    }
  }
  std::vector<Chunk> fresh;
  std::vector<std::pair<std::string, std::uint32_t>> evicted_rows;  // other chunks' rows, evicted from disk
  for (std::size_t i = 0; i < n_chunks; ++i) {
    if (keep[i]) continue;
    const std::size_t b = i * C, e = std::min(n, b + C);
    auto slice = engine::slice_cells(cells, b, e);
    if (!slice) {
      record_error(slice.error().message());
      break;
    }
    auto blob = encode_chunk(*slice, layout_, codecs[i]);
    if (!blob) {
      record_error("cannot encode a chunk of " + op.session + ": " + blob.error().message());
      break;
    }
    Chunk c;
    c.index = static_cast<std::uint32_t>(i);
    c.n_cells = static_cast<std::uint32_t>(e - b);
    c.codec = codecs[i];
    c.prefix_hash = hashes[i];
    if (opt_.disk_budget > 0) {
      std::vector<std::uint8_t> zblob;
      std::span<const std::uint8_t> disk_blob = *blob;
      c.disk_codec = codecs[i];
      if (opt_.disk_zstd && codecs[i] == Codec::exact) {
        if (auto z = encode_chunk(*slice, layout_, Codec::exact_zstd)) {
          zblob = std::move(*z);
          disk_blob = zblob;
          c.disk_codec = Codec::exact_zstd;
        }
      }
      if (auto st = write_chunk_file(op.session, c, disk_blob, evicted_rows); !st) {
        record_error("cannot write a KV chunk of " + op.session + " to disk: " + st.error().message());
      }
    }
    {
      std::lock_guard lock(mu_);
      if (opt_.ram_budget > 0 && make_ram_room(blob->size())) {
        stats_.ram.bytes += blob->size();
        c.ram = std::make_shared<const std::vector<std::uint8_t>>(std::move(*blob));
      }
      ++stats_.chunks_encoded;
    }
    fresh.push_back(std::move(c));
  }

  // Index first (new rows point at files already written), then the chunks in memory, then old files.
  auto st = db_->transaction([&]() -> Status {
    auto up = db_->prepare(
        "INSERT OR REPLACE INTO chunks(session, idx, n_cells, codec, prefix_hash, file, disk_codec, bytes) "
        "VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
    if (!up) return up.error();
    auto del = db_->prepare("DELETE FROM chunks WHERE session = ? AND idx = ?");
    if (!del) return del.error();
    auto del_from = db_->prepare("DELETE FROM chunks WHERE session = ? AND idx >= ?");
    if (!del_from) return del_from.error();
    for (const auto& [session, idx] : evicted_rows) {
      if (session == op.session && std::any_of(fresh.begin(), fresh.end(), [&, want = idx](const Chunk& c) { return c.index == want; })) {
        continue;  // replaced below
      }
      LLMD_TRY_STATUS(del->bind(1, session).bind(2, static_cast<std::int64_t>(idx)).run());
      del->reset();
    }
    for (const Chunk& c : fresh) {
      if (c.file.empty()) {
        LLMD_TRY_STATUS(del->bind(1, op.session).bind(2, static_cast<std::int64_t>(c.index)).run());
        del->reset();
        continue;
      }
      LLMD_TRY_STATUS(up->bind(1, op.session)
                          .bind(2, static_cast<std::int64_t>(c.index))
                          .bind(3, static_cast<std::int64_t>(c.n_cells))
                          .bind(4, static_cast<std::int64_t>(c.codec))
                          .bind(5, static_cast<std::int64_t>(c.prefix_hash))
                          .bind(6, c.file)
                          .bind(7, static_cast<std::int64_t>(c.disk_codec))
                          .bind(8, static_cast<std::int64_t>(c.disk_bytes))
                          .run());
      up->reset();
    }
    return del_from->bind(1, op.session).bind(2, static_cast<std::int64_t>(n_chunks)).run();
  });
  if (!st) record_error("cannot update the chunk index: " + st.error().message());

  std::vector<std::string> old_files;
  {
    std::lock_guard lock(mu_);
    Session& s = sessions_[op.session];
    const std::uint64_t now = ++clock_;
    auto release = [&](const Chunk& c) { release_chunk(c, old_files); };
    for (std::size_t i = n_chunks; i < s.chunks.size(); ++i) release(s.chunks[i]);
    s.chunks.resize(n_chunks);
    for (Chunk& c : fresh) {
      Chunk& slot = s.chunks[c.index];
      release(slot);
      if (!st) {  // the index did not take the new files: they must not outlive this process unnamed
        if (!c.file.empty()) {
          old_files.push_back(c.file);
          stats_.disk.bytes -= c.disk_bytes;
          c.file.clear();
        }
      }
      slot = std::move(c);
    }
    for (Chunk& c : s.chunks) c.last_use = now;
    ++stats_.write_backs;
  }
  for (const auto& f : old_files) (void)opt_.fs->remove_file(session_dir(op.session) / f);
}

void ChunkStore::release_chunk(const Chunk& c, std::vector<std::string>& files) {
  if (c.ram) stats_.ram.bytes -= c.ram->size();
  if (!c.file.empty()) {
    stats_.disk.bytes -= c.disk_bytes;
    files.push_back(c.file);
  }
}

void ChunkStore::do_drop(const std::string& session, std::uint32_t from) {
  std::vector<std::string> files;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    Session& s = it->second;
    for (std::size_t i = from; i < s.chunks.size(); ++i) release_chunk(s.chunks[i], files);
    if (from < s.chunks.size()) s.chunks.resize(from);
    if (from == 0 && s.pins == 0 && s.pending == 0) sessions_.erase(it);
  }
  auto st = db_->transaction([&]() -> Status {
    auto del = db_->prepare("DELETE FROM chunks WHERE session = ? AND idx >= ?");
    if (!del) return del.error();
    return del->bind(1, session).bind(2, static_cast<std::int64_t>(from)).run();
  });
  if (!st) record_error("cannot update the chunk index: " + st.error().message());
  for (const auto& f : files) (void)opt_.fs->remove_file(session_dir(session) / f);
  if (from == 0 && safe_name(session)) {
    std::error_code ec;
    std::filesystem::remove(session_dir(session), ec);  // only if empty
  }
}

LoadResult ChunkStore::load(const std::string& session, std::span<const engine::Token> history,
                            const RestoreTarget& target, std::vector<std::uint8_t>& buffer) {
  LoadResult r;
  std::vector<Chunk> chunks;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] {
      auto it = sessions_.find(session);
      return it == sessions_.end() || it->second.pending == 0 || stop_;
    });
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return r;
    const std::uint64_t now = ++clock_;
    for (auto& c : it->second.chunks) c.last_use = now;
    chunks = it->second.chunks;
  }
  // The plan: the chunks whose token prefix matches the history.
  const std::uint32_t C = opt_.chunk_tokens;
  std::size_t plan = 0;
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = chunks[i];
    if (!present(c) || i * C + c.n_cells > history.size()) break;
    h = token_prefix_hash(h, history.subspan(i * C, c.n_cells));
    if (h != c.prefix_hash) break;
    plan = i + 1;
    if (c.n_cells < C) break;  // a partial chunk is the last one
  }
  // Load only the prefix whose measured load cost plus the recompute of the rest is smallest.
  r.matched = plan;
  plan = cheapest_prefix(chunks, plan, history.size());
  // Each chunk is fetched (T1: in memory; T2: read, checksummed) and decoded straight into the
  // state. A bad chunk ends the plan there; the state is then rebuilt for the chunks before it.
  while (plan > 0) {
    std::size_t cells = 0;
    for (std::size_t i = 0; i < plan; ++i) cells += chunks[i].n_cells;
    engine::SeqStateWriter out(buffer, layout_, target.seq, target.n_stream, target.stream, cells);
    std::size_t at = 0, from_ram = 0, from_disk = 0;
    std::optional<std::size_t> failed;
    LoadCostSample cost;
    for (std::size_t i = 0; i < plan; ++i) {
      Chunk& c = chunks[i];
      const bool in_ram = c.ram != nullptr;
      const auto chunk_start = Clock::now();
      Status ok;
      if (!c.ram) {
        const auto t = Clock::now();
        // An upper bound for any encoding of the chunk: the exact rows plus positions and header.
        const std::uint64_t max_bytes = 4096 + c.n_cells * (layout_.bytes_per_cell() + 64);
        ok = opt_.fs->read_file(session_dir(session) / c.file, max_bytes, read_buf_);
        r.read_ms += ms_since(t);
      }
      if (ok) {
        const auto t = Clock::now();
        const std::span<const std::uint8_t> blob = c.ram ? std::span<const std::uint8_t>(*c.ram) : read_buf_;
        auto info = decode_chunk_into(blob, layout_, out, at, scratch_, c.ram ? Verify::header_only : Verify::checksum);
        if (!info) ok = info.error();
        else if (info->n_cells != c.n_cells || info->first_pos != static_cast<engine::Pos>(at)) {
          ok = Error(Errc::corrupt, "the chunk holds other positions than its index says");
        }
        r.decode_ms += ms_since(t);
      }
      if (!ok) {
        record_error("KV chunk " + std::to_string(i) + " of " + session + " is bad (" + ok.error().message() +
                     "); recomputing from there");
        ++r.bad;
        failed = i;
        break;
      }
      if (c.ram) {
        ++from_ram;
      } else {
        ++from_disk;
        if (opt_.ram_budget > 0) {  // keep what was read from disk in RAM, if it fits
          std::lock_guard lock(mu_);
          auto it = sessions_.find(session);
          if (it != sessions_.end() && i < it->second.chunks.size() &&
              it->second.chunks[i].prefix_hash == c.prefix_hash && !it->second.chunks[i].ram &&
              make_ram_room(read_buf_.size())) {
            stats_.ram.bytes += read_buf_.size();
            c.ram = std::make_shared<const std::vector<std::uint8_t>>(std::move(read_buf_));
            it->second.chunks[i].ram = c.ram;
            read_buf_ = {};
          }
        }
      }
      (in_ram ? cost.ram_cells : cost.disk_cells) += c.n_cells;
      (in_ram ? cost.ram_ms : cost.disk_ms) += ms_since(chunk_start);
      at += c.n_cells;
    }
    if (!failed) {
      learn_load_costs(cost);
      r.tokens = at;
      r.state_bytes = out.bytes().size();
      r.from_ram = from_ram;
      r.from_disk = from_disk;
      break;
    }
    plan = *failed;
  }
  if (r.bad > 0) {
    std::lock_guard lock(mu_);
    stats_.bad_chunks += r.bad;
    Op op;
    op.kind = Op::Kind::drop_from;
    op.session = session;
    op.from = static_cast<std::uint32_t>(plan);
    ops_.push_back(std::move(op));
    cv_.notify_all();
  }
  return r;
}

void ChunkStore::report_recompute(std::size_t tokens, double ms) {
  if (tokens == 0 || !(ms > 0.0)) return;
  std::lock_guard lock(mu_);
  const double per = ms / static_cast<double>(tokens);
  costs_.recompute_ms = costs_.recompute_ms > 0.0 ? 0.7 * costs_.recompute_ms + 0.3 * per : per;
}

void ChunkStore::learn_load_costs(const LoadCostSample& s) {
  std::lock_guard lock(mu_);
  auto learn = [](double& avg, double ms, std::size_t cells) {
    if (cells == 0) return;
    const double per = ms / static_cast<double>(cells);
    avg = avg > 0.0 ? 0.7 * avg + 0.3 * per : per;
  };
  learn(costs_.ram_ms, s.ram_ms, s.ram_cells);
  learn(costs_.disk_ms, s.disk_ms, s.disk_cells);
}

RestoreCosts ChunkStore::costs() const {
  std::lock_guard lock(mu_);
  return costs_;
}

std::size_t ChunkStore::cheapest_prefix(const std::vector<Chunk>& chunks, std::size_t matched,
                                        std::size_t history) const {
  const RestoreCosts k = costs();
  if (k.recompute_ms <= 0.0) return matched;  // nothing measured yet: loading is the safe bet
  // Total time if the first n chunks are loaded and the rest of the history is recomputed. A cost
  // not measured yet (a tier never read) counts as free, so that it gets measured.
  double best = static_cast<double>(history) * k.recompute_ms, load = 0.0;
  std::size_t best_n = 0, cells = 0;
  for (std::size_t i = 0; i < matched; ++i) {
    load += static_cast<double>(chunks[i].n_cells) * (chunks[i].ram ? k.ram_ms : k.disk_ms);
    cells += chunks[i].n_cells;
    const double total = load + static_cast<double>(history - cells) * k.recompute_ms;
    if (total <= best) {
      best = total;
      best_n = i + 1;
    }
  }
  return best_n;
}

StoreStats ChunkStore::stats() const {
  std::lock_guard lock(mu_);
  StoreStats s = stats_;
  s.costs = costs_;
  s.ram.budget = opt_.ram_budget;
  s.disk.budget = opt_.disk_budget;
  s.ram.chunks = s.disk.chunks = 0;
  for (const auto& [id, sess] : sessions_) {
    for (const auto& c : sess.chunks) {
      if (c.ram) {
        ++s.ram.chunks;
        ++s.ram.chunks_by_codec[static_cast<std::size_t>(c.codec)];
        s.ram.bytes_by_codec[static_cast<std::size_t>(c.codec)] += c.ram->size();
      }
      if (!c.file.empty()) {
        ++s.disk.chunks;
        ++s.disk.chunks_by_codec[static_cast<std::size_t>(c.disk_codec)];
        s.disk.bytes_by_codec[static_cast<std::size_t>(c.disk_codec)] += c.disk_bytes;
      }
    }
  }
  return s;
}

SessionResidency ChunkStore::residency(const std::string& session) const {
  SessionResidency r;
  std::lock_guard lock(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return r;
  for (const auto& c : it->second.chunks) {
    if (!present(c)) continue;
    ++r.chunks;
    r.tokens += c.n_cells;
    if (c.ram) {
      ++r.ram_chunks;
      r.ram_bytes += c.ram->size();
    }
    if (!c.file.empty()) {
      ++r.disk_chunks;
      r.disk_bytes += c.disk_bytes;
    }
    ++r.chunks_by_codec[static_cast<std::size_t>(c.ram ? c.codec : c.disk_codec)];
  }
  return r;
}

}  // namespace llmd::kvstore
