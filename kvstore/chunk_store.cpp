// The chunk store: opening, the queue and its byte bound, pins, stats (see chunk_store.h). The
// store's thread (write-back, drop, the disk reserve, index damage) is in chunk_store_write.cpp;
// the reads (load, stored_chunks, residency) in chunk_store_read.cpp.
#include "kvstore/chunk_store.h"

#include <algorithm>
#include <charconv>

#include <spdlog/spdlog.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kvstore/chunk_index.h"
#include "kvstore/chunk_store_detail.h"

namespace llmd::kvstore {
namespace {

// The chunk blob format the index's rows are valid for (chunk.h; 2: blobs carry their prefix hash).
constexpr const char* kFormat = "v2";

// "HOLDER/<idx>-<gen>.kvc" -> gen, or 0.
std::uint64_t file_gen(const std::string& path) {
  const std::string name = path.substr(path.find('/') + 1);
  const auto dash = name.find('-');
  const auto dot = name.rfind(".kvc");
  if (dash == std::string::npos || dot == std::string::npos || dot < dash) return 0;
  std::uint64_t g = 0;
  std::from_chars(name.data() + dash + 1, name.data() + dot, g);
  return g;
}

}  // namespace

ChunkStore::ChunkStore(ChunkStoreOptions options, const engine::KvLayout& layout)
    : opt_(std::move(options)),
      layout_(layout),
      ratios_(codec_ratios(layout, opt_.chunk_tokens)),
      tiers_(opt_.ram_budget, opt_.disk_budget) {
  restore_threads_ = opt_.restore_threads ? opt_.restore_threads
                                          : std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
}

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
    MutexLock lock(mu_);
    ++stats_.index_resets;
    spdlog::warn("kvstore: the chunk index {} is damaged ({}): it is discarded with every stored KV chunk; sessions "
                 "are recomputed as they are used",
                 (opt_.dir / "index.db").string(), opened->discarded);
  } else if (opened->identity_changed) {
    spdlog::info("kvstore: the model, KV layout or chunk format changed; every stored KV chunk is invalidated");
  }

  // The index, then a sweep of every file it does not name (torn writes, replaced chunks, and
  // all of them when the index was discarded).
  {
    MutexLock lock(mu_);
    for (IndexRow& row : opened->rows) {
      if (!detail::safe_name(row.session) || row.idx > (1u << 24)) continue;
      SessionEntry& s = tiers_.at(row.session);
      if (s.chunks.size() <= row.idx) s.chunks.resize(row.idx + 1);
      Chunk& c = s.chunks[row.idx];
      c.index = row.idx;
      c.n_cells = row.n_cells;
      c.codec = row.codec;
      c.prefix_hash = row.prefix_hash;
      // Files are named under the store's directory ("HOLDER/NAME"); rows written before chunks
      // were shared name them in the session's own directory.
      c.file = row.file.empty() || row.file.find('/') != std::string::npos ? std::move(row.file)
                                                                           : row.session + "/" + row.file;
      c.disk_codec = row.disk_codec;
      c.disk_bytes = row.bytes;
      gen_ = std::max(gen_, file_gen(c.file));
    }
    for (const OwnerRow& o : opened->owners) {
      if (tiers_.find(o.session)) tiers_.set_owner(o.session, o.uid, o.anonymous);
    }
    tiers_.recount_disk();
  }
  sweep_files();
  // A smaller disk budget than last time, or less free space than the reserve (others filled the
  // disk): evict down to them, as far as the store's own chunks go.
  const std::uint64_t shortfall = reserve_shortfall(0);
  std::vector<EvictedFile> evicted;
  std::size_t sessions = 0;
  std::uint64_t disk_bytes = 0;
  {
    MutexLock lock(mu_);
    if (tiers_.bytes(Tier::disk) > opt_.disk_budget || shortfall > 0) {
      RoomRequest r;
      r.extra = shortfall;
      r.partial = true;
      tiers_.make_room(Tier::disk, r, &evicted);
    }
    sessions = tiers_.sessions().size();
    disk_bytes = tiers_.bytes(Tier::disk);
  }
  Rows rows;
  remove_evicted(evicted, rows);
  remove_rows(rows);
  spdlog::info("kvstore: {} sessions, {} bytes of KV chunks on disk ({})", sessions, disk_bytes, opt_.dir.string());
  return {};
}

void ChunkStore::sweep_files() {
  std::map<std::string, std::set<std::string>> named;  // directory (the key that wrote them) -> files
  {
    MutexLock lock(mu_);
    for (const auto& [id, s] : tiers_.sessions()) {
      for (const auto& c : s.chunks) {
        const auto slash = c.file.find('/');
        if (slash != std::string::npos) named[c.file.substr(0, slash)].insert(c.file.substr(slash + 1));
      }
    }
  }
  auto entries = opt_.fs->list_dir(opt_.dir);
  if (!entries) return;  // nothing to sweep that can be seen
  for (const DirEntry& e : *entries) {
    if (!e.is_dir) continue;  // index.db and its journals
    auto it = named.find(e.name);
    if (it == named.end()) {
      (void)opt_.fs->remove_tree(opt_.dir / e.name);
      continue;
    }
    auto files = opt_.fs->list_dir(opt_.dir / e.name);
    if (!files) continue;
    for (const DirEntry& f : *files) {
      if (it->second.count(f.name) == 0) (void)opt_.fs->remove_file(opt_.dir / e.name / f.name);
    }
  }
}

ChunkStore::~ChunkStore() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ChunkStore::record_error(const std::string& message) {
  spdlog::warn("kvstore: {}", message);
  MutexLock lock(mu_);
  stats_.last_error = message;
}

void ChunkStore::enqueue(Op op) {
  queue_.push(std::move(op));
  cv_.notify_all();
}

void ChunkStore::shed_write_backs() {
  if (queue_.bytes() <= opt_.write_back_queue_bytes) return;
  std::set<std::string> in_use;
  for (const auto& [id, s] : tiers_.sessions()) {
    if (s.in_use()) in_use.insert(id);
  }
  for (const std::string& session : queue_.shed(opt_.write_back_queue_bytes, in_use)) {
    if (SessionEntry* s = tiers_.find(session); s && s->pending > 0) --s->pending;
    ++stats_.writebacks_dropped;
  }
  cv_.notify_all();  // flush() may find the queue empty now
}

void ChunkStore::write_back(std::string session, std::vector<engine::Token> tokens, std::vector<std::uint8_t> state,
                            std::vector<float> attention, std::optional<KeyOwner> owner, std::uint64_t lineage) {
  if (!detail::safe_name(session)) return;
  MutexLock lock(mu_);
  if (stop_) return;
  // Known at once (not when the write-back runs), so that find_prefix() and the per-uid limits see it.
  if (owner) tiers_.set_owner(session, owner->uid, owner->anonymous);
  ++tiers_.at(session).pending;
  Op op;
  op.kind = Op::Kind::write_back;
  op.session = std::move(session);
  op.tokens = std::move(tokens);
  op.state = std::move(state);
  op.attention = std::move(attention);
  op.lineage = lineage;
  if (owner) {
    op.uid = owner->uid;
    op.anonymous = owner->anonymous;
  }
  enqueue(std::move(op));
  shed_write_backs();
}

void ChunkStore::share_key(const std::string& source, const std::string& target, KeyOwner owner) {
  if (!detail::safe_name(source) || !detail::safe_name(target) || source == target) return;
  MutexLock lock(mu_);
  if (stop_) return;
  tiers_.set_owner(target, owner.uid, owner.anonymous);
  ++tiers_.at(target).pending;  // a load of the target waits for it, as for a write-back
  Op op;
  op.kind = Op::Kind::share;
  op.session = target;
  op.source = source;
  op.uid = owner.uid;
  op.anonymous = owner.anonymous;
  enqueue(std::move(op));
}

void ChunkStore::drop_session(const std::string& session) {
  MutexLock lock(mu_);
  Op op;
  op.kind = Op::Kind::drop;
  op.session = session;
  enqueue(std::move(op));
}

void ChunkStore::drop_from(const std::string& session, std::uint32_t first_chunk) {
  MutexLock lock(mu_);
  Op op;
  op.kind = Op::Kind::drop_from;
  op.session = session;
  op.from = first_chunk;
  enqueue(std::move(op));
}

void ChunkStore::retain_only(std::set<std::string> keep) {
  MutexLock lock(mu_);
  Op op;
  op.kind = Op::Kind::retain;
  op.keep = std::move(keep);
  enqueue(std::move(op));
}

void ChunkStore::flush() {
  MutexLock lock(mu_);
  while (!(queue_.empty() && !busy_)) lock.wait(cv_);
}

void ChunkStore::pin(const std::string& session) {
  MutexLock lock(mu_);
  ++tiers_.at(session).pins;
}

void ChunkStore::unpin(const std::string& session) {
  MutexLock lock(mu_);
  SessionEntry* s = tiers_.find(session);
  if (!s || s->pins == 0) return;
  if (--s->pins == 0) shed_write_backs();  // its write-back may be dropped from now on
}

void ChunkStore::wait_written_back(MutexLock& lock, const std::string& session) const {
  SessionEntry* s = tiers_.find(session);
  if (!s || s->pending == 0) return;
  // While it waits the session is in use: its entry stays (erase_if_idle) and its write-backs are
  // not dropped (shed_write_backs).
  ++s->waiters;
  while (!stop_ && s->pending > 0) lock.wait(cv_);
  --s->waiters;
}

StoreStats ChunkStore::stats() const {
  StoreStats s;
  {
    MutexLock lock(mu_);
    s = stats_;
    tiers_.fill(s.ram, s.disk);
    s.pending = queue_.size();
    s.pending_bytes = queue_.bytes();
    for (const auto& [id, e] : tiers_.sessions()) {
      if (!e.anonymous) continue;
      ++s.prefix_entries;
      for (const auto& c : e.chunks) s.prefix_bytes += (c.ram ? c.ram->size() : 0) + c.disk_bytes;
    }
  }
  s.costs = costs_.costs();
  return s;
}

RestoreCosts ChunkStore::costs() const { return costs_.costs(); }

void ChunkStore::report_recompute(std::size_t tokens, double ms) { costs_.report_recompute(tokens, ms); }

}  // namespace llmd::kvstore
