// The chunk store's own thread (see chunk_store.h): write-backs (cut, encode, keep in T1, write
// to T2 under the budget and the disk reserve, index), drops, and meeting a damaged index.
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "kvstore/chunk_index.h"
#include "kvstore/chunk_store.h"
#include "kvstore/chunk_store_detail.h"

namespace llmd::kvstore {

using detail::file_blocks;
using detail::kIndexCommitBytes;

void ChunkStore::run() {
  // Named for top -H and the like; niced if asked (ChunkStoreOptions::writer_nice, this thread only).
  (void)pthread_setname_np(pthread_self(), "llmd-kvstore");
  if (opt_.writer_nice != 0) (void)setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), opt_.writer_nice);
  while (true) {
    Op op;
    {
      MutexLock lock(mu_);
      while (!stop_ && queue_.empty()) lock.wait(cv_);
      auto next = queue_.pop();
      if (!next) return;  // stopping, and everything queued is done
      op = std::move(*next);
      busy_ = true;
    }
    switch (op.kind) {
      case Op::Kind::write_back: do_write_back(op); break;
      case Op::Kind::drop: do_drop(op.session, 0); break;
      case Op::Kind::drop_from: do_drop(op.session, op.from); break;
      case Op::Kind::share: do_share(op); break;
      case Op::Kind::retain: {
        std::vector<std::string> gone;
        {
          MutexLock lock(mu_);
          for (const auto& [id, e] : tiers_.sessions()) {
            if (!e.anonymous && op.keep.count(id) == 0) gone.push_back(id);
          }
        }
        for (const auto& id : gone) do_drop(id, 0);
        break;
      }
    }
    {
      MutexLock lock(mu_);
      if (op.kind == Op::Kind::write_back || op.kind == Op::Kind::share) {
        if (SessionEntry* s = tiers_.find(op.session); s && s->pending > 0) --s->pending;
      }
      busy_ = false;
    }
    cv_.notify_all();
  }
}

std::uint64_t ChunkStore::reserve_shortfall(std::uint64_t bytes) const {
  auto free = opt_.fs->free_bytes(opt_.dir);
  if (!free) return 0;  // the file system cannot say: the budget alone holds
  const std::uint64_t need = opt_.disk_reserve + (bytes > 0 ? file_blocks(bytes) + kIndexCommitBytes : 0);
  return need > *free ? need - *free : 0;
}

void ChunkStore::remove_evicted(const std::vector<EvictedFile>& evicted, Rows& rows) {
  for (const EvictedFile& e : evicted) {
    rows.emplace_back(e.session, e.index);
    (void)opt_.fs->remove_file(opt_.dir / e.file);
  }
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
    MutexLock lock(mu_);
    tiers_.forget_all_files();
    ++stats_.index_resets;
    stats_.last_error = "the chunk index was damaged (" + why + ") and was discarded";
  }
  // Every file is unnamed now. (A load() reading one at this moment finds it gone: a bad chunk.)
  if (auto entries = opt_.fs->list_dir(opt_.dir)) {
    for (const DirEntry& e : *entries) {
      if (e.is_dir) (void)opt_.fs->remove_tree(opt_.dir / e.name);
    }
  }
  if (Status st = index_->recreate(); !st) {
    index_.reset();
    record_error("cannot recreate the chunk index (" + st.error().message() +
                 "): KV chunks are kept in RAM only until llmd restarts");
  }
}

void ChunkStore::remove_rows(const Rows& rows) {
  if (rows.empty()) return;
  IndexUpdate u;
  u.remove = rows;
  (void)update_index(u);
}

ChunkStore::Written ChunkStore::write_chunk_file(const std::string& session, Chunk& c,
                                                 std::span<const std::uint8_t> blob, Rows& evicted_rows) {
  Status st;
  // A second attempt follows a write refused for space (ENOSPC, EDQUOT) although the free space
  // measured said there was room: the file system filled meanwhile, or a quota counts. It frees at
  // least the chunk's blocks and the index commit that follows it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    // Only this thread writes the store's files, so what is free now is free at the write, but for
    // other programs' writes (which the second attempt is for).
    std::uint64_t shortfall = reserve_shortfall(blob.size());
    if (attempt > 0) shortfall = std::max(shortfall, file_blocks(blob.size()) + kIndexCommitBytes);
    std::vector<EvictedFile> evicted;
    std::string name;
    bool skip = false;
    {
      MutexLock lock(mu_);
      RoomRequest room;
      room.bytes = blob.size();
      room.extra = shortfall;
      room.keep_session = &session;
      room.keep_below = c.index;
      if (!tiers_.make_room(Tier::disk, room, &evicted)) {
        if (attempt > 0) break;  // the space error stands
        if (shortfall == 0) {
          st = Error(Errc::resource_exhausted, "the disk budget cannot hold the chunk");
          break;
        }
        // Others have taken the disk into the reserve: the chunk stays in RAM, and the store gives
        // back what it holds of the reserve (a cache matters less than sessions.db).
        RoomRequest giveback;
        giveback.extra = reserve_shortfall(0);
        giveback.partial = true;
        giveback.keep_session = &session;
        giveback.keep_below = c.index;
        tiers_.make_room(Tier::disk, giveback, &evicted);
        ++stats_.reserve_skips;
        skip = true;
      } else {
        tiers_.reserve_disk(blob.size());
        name = std::to_string(c.index) + "-" + std::to_string(++gen_) + ".kvc";
      }
    }
    // An evicted chunk's row goes in the caller's transaction; its file can go now (a row without
    // its file reads as a missing chunk, should the process die before that commit).
    remove_evicted(evicted, evicted_rows);
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
      c.file = session + "/" + name;
      c.disk_bytes = blob.size();
      {
        MutexLock lock(mu_);
        tiers_.adopt_file(c);
      }
      if (disk_low_) {
        disk_low_ = false;
        spdlog::info("kvstore: the disk reserve is free again on {}: KV chunks are written to disk",
                     opt_.dir.string());
      }
      return Written::yes;
    }
    {
      MutexLock lock(mu_);
      tiers_.unreserve_disk(blob.size());
    }
    if (st.error().code() != Errc::resource_exhausted) break;
  }
  {
    MutexLock lock(mu_);
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
  std::uint64_t h = lineage_seed(op.lineage);
  for (std::size_t i = 0; i < n_chunks; ++i) {
    const std::size_t b = i * C, e = std::min(n, b + C);
    h = token_prefix_hash(h, std::span(op.tokens).subspan(b, e - b));
    hashes[i] = h;
  }
  auto importance = opt_.policy.kind == PolicyKind::attention
                        ? attention_chunk_importance(op.attention, n, C)
                        : std::vector<float>{};
  if (importance.empty()) importance = position_importance(n_chunks, opt_.policy);
  auto codecs = choose_codecs(opt_.policy, importance, ratios_);

  // Which chunks are new or changed.
  std::vector<bool> keep(n_chunks, false);
  {
    MutexLock lock(mu_);
    const SessionEntry& s = tiers_.at(op.session);
    for (std::size_t i = 0; i < n_chunks && i < s.chunks.size(); ++i) {
      const Chunk& c = s.chunks[i];
      const std::size_t cells_i = std::min<std::size_t>(C, n - i * C);
      keep[i] = c.present() && c.prefix_hash == hashes[i] && c.n_cells == cells_i && c.codec == codecs[i];
    }
  }
  std::vector<Chunk> fresh;
  std::vector<bool> shared;  // by fresh chunk: it shares another key's copies (no file of its own)
  Rows evicted_rows;  // other chunks' rows, evicted from disk
  for (std::size_t i = 0; i < n_chunks; ++i) {
    if (keep[i]) continue;
    const std::size_t b = i * C, e = std::min(n, b + C);
    // The same chunk (same prefix hash, cells and codec) held by another key of the same uid: a
    // shared system prompt, a fork, a stateless request's earlier turn. Stored once: this key
    // takes references to its copies.
    if (op.uid) {
      Chunk c;
      c.index = static_cast<std::uint32_t>(i);
      c.n_cells = static_cast<std::uint32_t>(e - b);
      c.codec = codecs[i];
      c.prefix_hash = hashes[i];
      MutexLock lock(mu_);
      if (const std::set<std::string>* keys = tiers_.keys_of(*op.uid)) {
        for (const std::string& k : *keys) {
          const SessionEntry* donor = k == op.session ? nullptr : tiers_.find(k);
          if (!donor || i >= donor->chunks.size()) continue;
          const Chunk& d = donor->chunks[i];
          if (!d.present() || d.prefix_hash != c.prefix_hash || d.n_cells != c.n_cells || d.codec != c.codec) continue;
          tiers_.share(c, d);
          if (c.ram || !c.file.empty()) break;
        }
      }
      if (c.ram || !c.file.empty()) {
        ++stats_.chunks_shared;
        fresh.push_back(std::move(c));
        shared.push_back(true);
        continue;
      }
    }
    auto slice = engine::slice_cells(cells, b, e);
    if (!slice) {
      record_error(slice.error().message());
      break;
    }
    auto blob = encode_chunk(*slice, layout_, codecs[i], hashes[i]);
    if (!blob && codecs[i] != Codec::exact && blob.error().code() == Errc::invalid_argument) {
      // KV a lossy codec cannot hold (non-finite values, a range beyond half precision): exact.
      spdlog::warn("kvstore: chunk {} of {} kept exact: {}", i, op.session, blob.error().message());
      codecs[i] = Codec::exact;
      blob = encode_chunk(*slice, layout_, Codec::exact, hashes[i]);
    }
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
      MutexLock lock(mu_);
      tiers_.keep_in_ram(c, std::make_shared<const std::vector<std::uint8_t>>(std::move(*blob)));
      ++stats_.chunks_encoded;
    }
    fresh.push_back(std::move(c));
    shared.push_back(false);
  }

  // Index first (new rows point at files already written), then the chunks in memory, then old files.
  IndexUpdate update;
  for (const auto& [session, idx] : evicted_rows) {
    if (session == op.session &&
        std::any_of(fresh.begin(), fresh.end(), [&, want = idx](const Chunk& c) { return c.index == want; })) {
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
  if (op.uid) update.owners.push_back({op.session, *op.uid, op.anonymous});
  const Status st = index_ ? index_->apply(update) : Status{};
  if (!st && !ChunkIndex::is_damage(st.error())) record_error("cannot update the chunk index: " + st.error().message());

  std::vector<std::string> old_files;
  {
    MutexLock lock(mu_);
    SessionEntry& s = tiers_.at(op.session);
    const std::uint64_t now = tiers_.tick();
    for (std::size_t i = n_chunks; i < s.chunks.size(); ++i) tiers_.release(s.chunks[i], old_files);
    s.chunks.resize(n_chunks);
    for (std::size_t f = 0; f < fresh.size(); ++f) {
      Chunk& c = fresh[f];
      Chunk& slot = s.chunks[c.index];
      tiers_.release(slot, old_files);
      if (!st && !c.file.empty()) {
        // The index did not take the new files: they must not outlive this process unnamed (a
        // shared one is its holder's, named by its row).
        if (!shared[f]) old_files.push_back(c.file);
        tiers_.drop_file(c);
      }
      slot = std::move(c);
    }
    for (Chunk& c : s.chunks) c.last_use = now;
    ++stats_.write_backs;
  }
  for (const auto& f : old_files) (void)opt_.fs->remove_file(opt_.dir / f);
  // Last, when the chunks above no longer count files they do not have.
  if (!st && ChunkIndex::is_damage(st.error())) discard_disk_tier(st.error().message());
  if (op.uid && op.anonymous) enforce_prefix_limits(*op.uid, op.session);
}

void ChunkStore::enforce_prefix_limits(std::uint32_t uid, const std::string& keep) {
  if (opt_.prefix_entries_per_uid == 0 && opt_.prefix_bytes_per_uid == 0) return;
  while (true) {
    std::string victim;
    {
      MutexLock lock(mu_);
      const std::set<std::string>* keys = tiers_.keys_of(uid);
      if (!keys) return;
      std::size_t entries = 0;
      std::uint64_t bytes = 0, oldest = UINT64_MAX;
      for (const std::string& k : *keys) {
        const SessionEntry* e = tiers_.find(k);
        if (!e || !e->anonymous) continue;
        ++entries;
        std::uint64_t last = 0;
        for (const auto& c : e->chunks) {
          bytes += (c.ram ? c.ram->size() : 0) + c.disk_bytes;
          last = std::max(last, c.last_use);
        }
        if (k != keep && !e->in_use() && e->pending == 0 && last < oldest) {
          oldest = last;
          victim = k;
        }
      }
      const bool over = (opt_.prefix_entries_per_uid != 0 && entries > opt_.prefix_entries_per_uid) ||
                        (opt_.prefix_bytes_per_uid != 0 && bytes > opt_.prefix_bytes_per_uid);
      if (!over || victim.empty()) return;
      ++stats_.prefix_entries_dropped;
    }
    do_drop(victim, 0);
  }
}

void ChunkStore::do_share(const Op& op) {
  std::vector<Chunk> taken;
  {
    MutexLock lock(mu_);
    const SessionEntry* src = tiers_.find(op.source);
    SessionEntry& dst = tiers_.at(op.session);
    if (!src || !dst.chunks.empty()) return;  // nothing to take, or the target has KV of its own
    const std::uint64_t now = tiers_.tick();
    for (const Chunk& d : src->chunks) {
      if (!d.present()) break;  // a gap ends every chain
      Chunk c;
      c.index = d.index;
      c.n_cells = d.n_cells;
      c.codec = d.codec;
      c.prefix_hash = d.prefix_hash;
      tiers_.share(c, d);
      if (!c.present()) break;
      c.last_use = now;
      taken.push_back(c);
      ++stats_.chunks_shared;
    }
    dst.chunks = taken;
  }
  IndexUpdate update;
  for (const Chunk& c : taken) {
    if (!c.file.empty()) {
      update.put.push_back({op.session, c.index, c.n_cells, c.codec, c.prefix_hash, c.file, c.disk_codec, c.disk_bytes});
    }
  }
  if (op.uid) update.owners.push_back({op.session, *op.uid, op.anonymous});
  (void)update_index(update);
}

void ChunkStore::do_drop(const std::string& session, std::uint32_t from) {
  std::vector<std::string> files;
  {
    MutexLock lock(mu_);
    SessionEntry* s = tiers_.find(session);
    if (!s) return;
    for (std::size_t i = from; i < s->chunks.size(); ++i) tiers_.release(s->chunks[i], files);
    if (from < s->chunks.size()) s->chunks.resize(from);
    if (from == 0) tiers_.erase_if_idle(session);
  }
  IndexUpdate update;
  update.remove_from.emplace_back(session, from);
  if (from == 0) update.owners_remove.push_back(session);
  (void)update_index(update);
  std::set<std::string> holders;  // directories of other keys that held shared files
  for (const auto& f : files) {
    (void)opt_.fs->remove_file(opt_.dir / f);
    const std::string holder = f.substr(0, f.find('/'));
    if (holder != session) holders.insert(holder);
  }
  if (from == 0 && detail::safe_name(session)) holders.insert(session);
  for (const auto& h : holders) {
    bool live = false;
    {
      MutexLock lock(mu_);
      live = h != session && tiers_.find(h) != nullptr;
    }
    if (!live && detail::safe_name(h)) (void)opt_.fs->remove_empty_dir(session_dir(h));  // only if empty
  }
}

}  // namespace llmd::kvstore
