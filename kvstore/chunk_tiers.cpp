// The chunk table and its tiers (see chunk_tiers.h).
#include "kvstore/chunk_tiers.h"

#include <algorithm>

#include "kvstore/eviction.h"
#include "kvstore/policy.h"

namespace llmd::kvstore {

ChunkTiers::ChunkTiers(std::uint64_t ram_budget, std::uint64_t disk_budget)
    : ram_budget_(ram_budget), disk_budget_(disk_budget) {}

SessionEntry* ChunkTiers::find(const std::string& session) {
  auto it = sessions_.find(session);
  return it == sessions_.end() ? nullptr : &it->second;
}

const SessionEntry* ChunkTiers::find(const std::string& session) const {
  auto it = sessions_.find(session);
  return it == sessions_.end() ? nullptr : &it->second;
}

SessionEntry& ChunkTiers::at(const std::string& session) { return sessions_[session]; }

void ChunkTiers::erase_if_idle(const std::string& session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  const SessionEntry& s = it->second;
  if (!s.chunks.empty() || s.in_use() || s.pending != 0) return;
  if (s.uid) {
    auto keys = by_uid_.find(*s.uid);
    if (keys != by_uid_.end()) {
      keys->second.erase(session);
      if (keys->second.empty()) by_uid_.erase(keys);
    }
  }
  sessions_.erase(it);
}

void ChunkTiers::set_owner(const std::string& key, std::uint32_t uid, bool anonymous) {
  SessionEntry& s = sessions_[key];
  if (s.uid && *s.uid != uid) {
    auto keys = by_uid_.find(*s.uid);
    if (keys != by_uid_.end()) keys->second.erase(key);
  }
  s.uid = uid;
  s.anonymous = anonymous;
  by_uid_[uid].insert(key);
}

const std::set<std::string>* ChunkTiers::keys_of(std::uint32_t uid) const {
  auto it = by_uid_.find(uid);
  return it == by_uid_.end() ? nullptr : &it->second;
}

std::vector<std::string> ChunkTiers::session_ids() const {
  std::vector<std::string> out;
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(id);
  return out;
}

bool ChunkTiers::make_room(Tier tier, const RoomRequest& r, std::vector<EvictedFile>* evicted) {
  const std::uint64_t budget = this->budget(tier);
  std::uint64_t& held = tier == Tier::ram ? ram_bytes_ : disk_bytes_;
  if (r.bytes > budget) return false;
  const std::uint64_t total = held + r.bytes;
  const std::uint64_t need = std::max(total > budget ? total - budget : 0, r.extra);
  if (need == 0) return true;
  // The tier's copies, each with what LCTRU orders by. Both tiers order a chunk by the tolerance
  // of the policy's codec (the RAM copy's), so that a chunk ranks alike in both.
  std::vector<EvictionCandidate> cand;
  std::vector<std::pair<const std::string*, ChunkEntry*>> where;
  for (auto& [id, s] : sessions_) {
    const bool own = r.keep_session && id == *r.keep_session;
    for (auto& c : s.chunks) {
      const bool has = tier == Tier::ram ? c.ram != nullptr : !c.file.empty();
      if (!has) continue;
      const std::uint64_t size = tier == Tier::ram ? c.ram->size() : c.disk_bytes;
      cand.push_back({tolerance_level(c.codec), c.last_use, c.index, size, s.in_use() || (own && c.index < r.keep_below)});
      where.emplace_back(&id, &c);
    }
  }
  const auto victims = lctru_victims(cand, need);
  std::uint64_t freed = 0;
  for (std::size_t i : victims) freed += cand[i].bytes;
  if (freed < need && !r.partial) return false;
  for (std::size_t i : victims) {
    ChunkEntry& c = *where[i].second;
    held -= cand[i].bytes;
    if (tier == Tier::ram) {
      c.ram.reset();
      continue;
    }
    if (evicted) evicted->push_back({*where[i].first, c.index, c.file});
    c.file.clear();
    c.disk_bytes = 0;
  }
  return freed >= need;
}

bool ChunkTiers::room_in_ram(std::uint64_t bytes) {
  if (ram_budget_ == 0) return false;
  RoomRequest r;
  r.bytes = bytes;
  r.partial = true;  // the RAM tier evicts what it can even when the copy then does not fit (as it always did)
  return make_room(Tier::ram, r);
}

bool ChunkTiers::keep_in_ram(ChunkEntry& c, std::shared_ptr<const std::vector<std::uint8_t>> blob) {
  if (!blob || !room_in_ram(blob->size())) return false;
  ram_bytes_ += blob->size();
  c.ram = std::move(blob);
  return true;
}

void ChunkTiers::release(const ChunkEntry& c, std::vector<std::string>& files) {
  if (c.ram) ram_bytes_ -= c.ram->size();
  if (!c.file.empty()) {
    disk_bytes_ -= c.disk_bytes;
    files.push_back(c.file);
  }
}

void ChunkTiers::drop_file(ChunkEntry& c) {
  if (c.file.empty()) return;
  disk_bytes_ -= c.disk_bytes;
  c.file.clear();
  c.disk_bytes = 0;
}

void ChunkTiers::forget_all_files() {
  for (auto& [id, s] : sessions_) {
    for (auto& c : s.chunks) {
      c.file.clear();
      c.disk_bytes = 0;
    }
  }
  disk_bytes_ = 0;
}

void ChunkTiers::recount_disk() {
  disk_bytes_ = 0;
  for (const auto& [id, s] : sessions_) {
    for (const auto& c : s.chunks) {
      if (!c.file.empty()) disk_bytes_ += c.disk_bytes;
    }
  }
}

void ChunkTiers::fill(TierStats& ram, TierStats& disk) const {
  ram = {};
  disk = {};
  ram.budget = ram_budget_;
  disk.budget = disk_budget_;
  ram.bytes = ram_bytes_;
  disk.bytes = disk_bytes_;
  for (const auto& [id, s] : sessions_) {
    for (const auto& c : s.chunks) {
      if (c.ram) {
        ++ram.chunks;
        ++ram.chunks_by_codec[static_cast<std::size_t>(c.codec)];
        ram.bytes_by_codec[static_cast<std::size_t>(c.codec)] += c.ram->size();
      }
      if (!c.file.empty()) {
        ++disk.chunks;
        ++disk.chunks_by_codec[static_cast<std::size_t>(c.disk_codec)];
        disk.bytes_by_codec[static_cast<std::size_t>(c.disk_codec)] += c.disk_bytes;
      }
    }
  }
}

}  // namespace llmd::kvstore
