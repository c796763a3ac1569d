// The chunk store: opening, the write-back thread, eviction, the disk reserve (see chunk_store.h).
// Reads (load, stored_chunks, restore costs, residency) are in chunk_store_read.cpp.
#include "kvstore/chunk_store.h"

#include <algorithm>
#include <charconv>
#include <system_error>

#include <spdlog/spdlog.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kvstore/chunk_index.h"
#include "kvstore/eviction.h"

namespace llmd::kvstore {
namespace {

// The chunk blob format the index's rows are valid for (chunk.h; 2: blobs carry their prefix hash).
constexpr const char* kFormat = "v2";

// What a chunk file takes of its file system beyond its bytes (a page, a block) and what one index
// commit may add to the index's WAL: both counted against the disk reserve.
constexpr std::uint64_t kBlockBytes = 4096;
constexpr std::uint64_t kIndexCommitBytes = 64 << 10;
std::uint64_t file_blocks(std::uint64_t bytes) { return (bytes + kBlockBytes - 1) / kBlockBytes * kBlockBytes; }

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
  // A different model, KV layout or chunk format makes every chunk useless: the index forgets them
  // all. The same identity seeds every prefix hash, so a chunk file made under another one never
  // matches a history either, whatever its index row says.
  const std::string identity = model_fingerprint + "/" + std::to_string(layout_id(layout_)) + "/" + kFormat;
  chain_seed_ = XXH3_64bits(identity.data(), identity.size());
  auto opened = ChunkIndex::open(opt_.dir / "index.db", identity);
  if (!opened) return opened.error();
  index_ = std::move(opened->index);
  if (!opened->discarded.empty()) {
    ++stats_.index_resets;
    spdlog::warn("kvstore: the chunk index {} is damaged ({}): it is discarded with every stored KV chunk; sessions "
                 "are recomputed as they are used",
                 (opt_.dir / "index.db").string(), opened->discarded);
  } else if (opened->identity_changed) {
    spdlog::info("kvstore: the model, KV layout or chunk format changed; every stored KV chunk is invalidated");
  }

  // The index, then a sweep of every file it does not name (torn writes, replaced chunks, and
  // all of them when the index was discarded).
  std::uint64_t disk_used = 0;
  for (IndexRow& row : opened->rows) {
    if (!safe_name(row.session) || row.idx > (1u << 24)) continue;
    Session& s = sessions_[row.session];
    if (s.chunks.size() <= row.idx) s.chunks.resize(row.idx + 1);
    Chunk& c = s.chunks[row.idx];
    c.index = row.idx;
    c.n_cells = row.n_cells;
    c.codec = row.codec;
    c.prefix_hash = row.prefix_hash;
    c.file = std::move(row.file);
    c.disk_codec = row.disk_codec;
    c.disk_bytes = row.bytes;
    disk_used += c.disk_bytes;
    gen_ = std::max(gen_, file_gen(c.file));
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
  // A smaller disk budget than last time, or less free space than the reserve (others filled the
  // disk): evict down to them, as far as the store's own chunks go.
  const std::uint64_t shortfall = reserve_shortfall(0);
  if (disk_used > opt_.disk_budget || shortfall > 0) {
    std::vector<std::pair<std::string, Chunk>> evicted;
    make_disk_room(0, shortfall, evicted, /*partial=*/true);
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

bool ChunkStore::make_disk_room(std::uint64_t bytes, std::uint64_t extra,
                                std::vector<std::pair<std::string, Chunk>>& evicted, bool partial,
                                const std::string* keep_session, std::uint32_t keep_below) {
  if (bytes > opt_.disk_budget) return false;
  const std::uint64_t total = stats_.disk.bytes + bytes;
  const std::uint64_t need = std::max(total > opt_.disk_budget ? total - opt_.disk_budget : 0, extra);
  if (need == 0) return true;
  std::vector<EvictionCandidate> cand;
  std::vector<std::pair<const std::string*, Chunk*>> where;
  for (auto& [id, s] : sessions_) {
    const bool own = keep_session && id == *keep_session;
    for (auto& c : s.chunks) {
      if (c.file.empty()) continue;
      cand.push_back({tolerance_level(c.codec), c.last_use, c.index, c.disk_bytes,
                      s.pins > 0 || (own && c.index < keep_below)});
      where.emplace_back(&id, &c);
    }
  }
  const auto victims = lctru_victims(cand, need);
  std::uint64_t freed = 0;
  for (std::size_t i : victims) freed += cand[i].bytes;
  if (freed < need && !partial) return false;
  for (std::size_t i : victims) {
    Chunk& c = *where[i].second;
    stats_.disk.bytes -= c.disk_bytes;
    evicted.emplace_back(*where[i].first, c);
    c.file.clear();
    c.disk_bytes = 0;
  }
  return freed >= need;
}

std::uint64_t ChunkStore::reserve_shortfall(std::uint64_t bytes) const {
  auto free = opt_.fs->free_bytes(opt_.dir);
  if (!free) return 0;  // the file system cannot say: the budget alone holds
  const std::uint64_t need = opt_.disk_reserve + (bytes > 0 ? file_blocks(bytes) + kIndexCommitBytes : 0);
  return need > *free ? need - *free : 0;
}

Status ChunkStore::update_index(const IndexUpdate& update) {
  if (!index_) return {};  // the disk tier is off
  Status st = index_->apply(update);
  if (!st) {
    if (ChunkIndex::is_damage(st.error())) discard_disk_tier(st.error().message());
    else record_error("cannot update the chunk index: " + st.error().message());
  }
  return st;
}

void ChunkStore::discard_disk_tier(const std::string& why) {
  spdlog::warn("kvstore: the chunk index {} is damaged ({}): it is discarded with every KV chunk file; RAM copies "
               "are kept, the rest is recomputed as sessions are used",
               (opt_.dir / "index.db").string(), why);
  {
    std::lock_guard lock(mu_);
    for (auto& [id, s] : sessions_) {
      for (auto& c : s.chunks) {
        c.file.clear();
        c.disk_bytes = 0;
      }
    }
    stats_.disk.bytes = 0;
    ++stats_.index_resets;
    stats_.last_error = "the chunk index was damaged (" + why + ") and was discarded";
  }
  // Every file is unnamed now. (A load() reading one at this moment finds it gone: a bad chunk.)
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(opt_.dir, ec)) {
    std::error_code ignored;
    if (entry.is_directory(ignored)) std::filesystem::remove_all(entry.path(), ignored);
  }
  if (Status st = index_->recreate(); !st) {
    index_.reset();
    record_error("cannot recreate the chunk index (" + st.error().message() +
                 "): KV chunks are kept in RAM only until llmd restarts");
  }
}

void ChunkStore::remove_rows(const std::vector<std::pair<std::string, std::uint32_t>>& rows) {
  if (rows.empty()) return;
  IndexUpdate u;
  u.remove = rows;
  (void)update_index(u);
}

ChunkStore::Written ChunkStore::write_chunk_file(const std::string& session, Chunk& c,
                                                 std::span<const std::uint8_t> blob,
                                                 std::vector<std::pair<std::string, std::uint32_t>>& evicted_rows) {
  Status st;
  // A second attempt follows a write refused for space (ENOSPC, EDQUOT) although the free space
  // measured said there was room: the file system filled meanwhile, or a quota counts. It frees at
  // least the chunk's blocks and the index commit that follows it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    // Only this thread writes the store's files, so what is free now is free at the write, but for
    // other programs' writes (which the second attempt is for).
    std::uint64_t shortfall = reserve_shortfall(blob.size());
    if (attempt > 0) shortfall = std::max(shortfall, file_blocks(blob.size()) + kIndexCommitBytes);
    std::vector<std::pair<std::string, Chunk>> evicted;
    std::string name;
    bool skip = false;
    {
      std::lock_guard lock(mu_);
      if (!make_disk_room(blob.size(), shortfall, evicted, /*partial=*/false, &session, c.index)) {
        if (attempt > 0) break;  // the space error stands
        if (shortfall == 0) {
          st = Error(Errc::resource_exhausted, "the disk budget cannot hold the chunk");
          break;
        }
        // Others have taken the disk into the reserve: the chunk stays in RAM, and the store gives
        // back what it holds of the reserve (a cache matters less than sessions.db).
        make_disk_room(0, reserve_shortfall(0), evicted, /*partial=*/true, &session, c.index);
        ++stats_.reserve_skips;
        skip = true;
      } else {
        stats_.disk.bytes += blob.size();  // reserved
        name = std::to_string(c.index) + "-" + std::to_string(++gen_) + ".kvc";
      }
    }
    // An evicted chunk's row goes in the caller's transaction; its file can go now (a row without
    // its file reads as a missing chunk, should the process die before that commit).
    for (auto& [s, e] : evicted) {
      evicted_rows.emplace_back(s, e.index);
      (void)opt_.fs->remove_file(session_dir(s) / e.file);
    }
    if (skip) {
      if (!disk_low_) {
        disk_low_ = true;
        spdlog::warn("kvstore: less than the disk reserve ({} MiB) would be left free on {}: KV chunks are kept in "
                     "RAM only until there is room",
                     opt_.disk_reserve >> 20, opt_.dir.string());
      }
      return Written::skipped;
    }
    st = opt_.fs->make_dirs(session_dir(session));
    if (st) st = opt_.fs->write_file(session_dir(session) / name, blob);
    if (st) {
      c.file = name;
      c.disk_bytes = blob.size();
      if (disk_low_) {
        disk_low_ = false;
        spdlog::info("kvstore: the disk reserve is free again on {}: KV chunks are written to disk",
                     opt_.dir.string());
      }
      return Written::yes;
    }
    {
      std::lock_guard lock(mu_);
      stats_.disk.bytes -= blob.size();
    }
    if (st.error().code() != Errc::resource_exhausted) break;
  }
  {
    std::lock_guard lock(mu_);
    ++stats_.write_errors;
  }
  record_error("cannot write a KV chunk of " + session + " to disk (kept in RAM only): " + st.error().message());
  return Written::failed;
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
  std::uint64_t h = chain_seed_;
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
    auto blob = encode_chunk(*slice, layout_, codecs[i], hashes[i]);
    if (!blob) {
      record_error("cannot encode a chunk of " + op.session + ": " + blob.error().message());
      break;
    }
    Chunk c;
    c.index = static_cast<std::uint32_t>(i);
    c.n_cells = static_cast<std::uint32_t>(e - b);
    c.codec = codecs[i];
    c.prefix_hash = hashes[i];
    if (opt_.disk_budget > 0 && index_) {
      std::vector<std::uint8_t> zblob;
      std::span<const std::uint8_t> disk_blob = *blob;
      c.disk_codec = codecs[i];
      if (opt_.disk_zstd && codecs[i] == Codec::exact) {
        if (auto z = encode_chunk(*slice, layout_, Codec::exact_zstd, hashes[i])) {
          zblob = std::move(*z);
          disk_blob = zblob;
          c.disk_codec = Codec::exact_zstd;
        }
      }
      (void)write_chunk_file(op.session, c, disk_blob, evicted_rows);  // failures are recorded there
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
  IndexUpdate update;
  for (const auto& [session, idx] : evicted_rows) {
    if (session == op.session && std::any_of(fresh.begin(), fresh.end(), [&, want = idx](const Chunk& c) { return c.index == want; })) {
      continue;  // replaced below
    }
    update.remove.emplace_back(session, idx);
  }
  for (const Chunk& c : fresh) {
    if (c.file.empty()) {
      update.remove.emplace_back(op.session, c.index);
      continue;
    }
    update.put.push_back({op.session, c.index, c.n_cells, c.codec, c.prefix_hash, c.file, c.disk_codec, c.disk_bytes});
  }
  update.remove_from.emplace_back(op.session, static_cast<std::uint32_t>(n_chunks));
  const Status st = index_ ? index_->apply(update) : Status{};
  if (!st && !ChunkIndex::is_damage(st.error())) record_error("cannot update the chunk index: " + st.error().message());

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
  // Last, when the chunks above no longer count files they do not have.
  if (!st && ChunkIndex::is_damage(st.error())) discard_disk_tier(st.error().message());
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
  IndexUpdate update;
  update.remove_from.emplace_back(session, from);
  (void)update_index(update);
  for (const auto& f : files) (void)opt_.fs->remove_file(session_dir(session) / f);
  if (from == 0 && safe_name(session)) {
    std::error_code ec;
    std::filesystem::remove(session_dir(session), ec);  // only if empty
  }
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

}  // namespace llmd::kvstore
