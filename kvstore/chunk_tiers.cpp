// The chunk table and its tiers (see chunk_tiers.h).
#include "kvstore/chunk_tiers.h"

#include <algorithm>
#include <iterator>
#include <set>

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
  // of the policy's codec (the RAM copy's), so that a chunk ranks alike in both. A copy shared by
  // several entries is one candidate: kept if any of them must be kept, as recent as its most
  // recent use, and evicted from all of them at once (only then are its bytes free).
  std::vector<EvictionCandidate> cand;
  std::vector<std::vector<std::pair<const std::string*, ChunkEntry*>>> where;
  std::map<std::string, std::size_t> file_at;
  std::map<const void*, std::size_t> blob_at;
  for (auto& [id, s] : sessions_) {
    const bool own = r.keep_session && id == *r.keep_session;
    for (auto& c : s.chunks) {
      const bool has = tier == Tier::ram ? c.ram != nullptr : !c.file.empty();
      if (!has) continue;
      const bool keep = s.in_use() || (own && c.index < r.keep_below);
      std::size_t at = cand.size();
      bool fresh = true;
      if (tier == Tier::ram) {
        auto [it, inserted] = blob_at.emplace(c.ram.get(), at);
        fresh = inserted;
        at = it->second;
      } else {
        auto [it, inserted] = file_at.emplace(c.file, at);
        fresh = inserted;
        at = it->second;
      }
      if (fresh) {
        const std::uint64_t size = tier == Tier::ram ? c.ram->size() : c.disk_bytes;
        cand.push_back({tolerance_level(c.codec), c.last_use, c.index, size, keep});
        where.emplace_back();
      } else {
        EvictionCandidate& e = cand[at];
        e.last_use = std::max(e.last_use, c.last_use);
        e.index = std::min(e.index, c.index);
        e.pinned = e.pinned || keep;
      }
      where[at].emplace_back(&id, &c);
    }
  }
  // A copy with more references than entries in the table is being shared by a write-back that
  // has not installed its chunk yet (share()): kept.
  for (const auto& [blob, at] : blob_at) {
    auto it = ram_refs_.find(blob);
    if (it != ram_refs_.end() && it->second > where[at].size()) cand[at].pinned = true;
  }
  for (const auto& [name, at] : file_at) {
    auto it = file_refs_.find(name);
    if (it != file_refs_.end() && it->second > where[at].size()) cand[at].pinned = true;
  }
  const auto victims = lctru_victims(cand, need);
  std::uint64_t freed = 0;
  for (std::size_t i : victims) freed += cand[i].bytes;
  if (freed < need && !r.partial) return false;
  for (std::size_t i : victims) {
    held -= cand[i].bytes;
    for (auto& [id, c] : where[i]) {
      if (tier == Tier::ram) {
        c->ram.reset();
        continue;
      }
      if (evicted) evicted->push_back({*id, c->index, c->file});
      c->file.clear();
      c->disk_bytes = 0;
    }
  }
  // The evicted copies have no references left (every entry holding one was in its group).
  const std::set<std::size_t> gone(victims.begin(), victims.end());
  if (tier == Tier::ram) {
    for (const auto& [blob, at] : blob_at) {
      if (gone.count(at) > 0) ram_refs_.erase(blob);
    }
  } else {
    for (const auto& [name, at] : file_at) {
      if (gone.count(at) > 0) file_refs_.erase(name);
    }
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

void ChunkTiers::ref_ram(const ChunkEntry& c) {
  if (c.ram && ram_refs_[c.ram.get()]++ == 0) ram_bytes_ += c.ram->size();
}

void ChunkTiers::unref_ram(const ChunkEntry& c) {
  if (!c.ram) return;
  auto it = ram_refs_.find(c.ram.get());
  if (it == ram_refs_.end()) return;
  if (--it->second == 0) {
    ram_bytes_ -= c.ram->size();
    ram_refs_.erase(it);
  }
}

bool ChunkTiers::unref_file(const ChunkEntry& c) {
  auto it = file_refs_.find(c.file);
  if (it == file_refs_.end()) return false;
  if (--it->second > 0) return false;
  disk_bytes_ -= c.disk_bytes;
  file_refs_.erase(it);
  return true;
}

bool ChunkTiers::keep_in_ram(ChunkEntry& c, std::shared_ptr<const std::vector<std::uint8_t>> blob) {
  if (!blob) return false;
  if (ram_refs_.count(blob.get()) == 0 && !room_in_ram(blob->size())) return false;
  unref_ram(c);
  c.ram = std::move(blob);
  ref_ram(c);
  return true;
}

void ChunkTiers::share(ChunkEntry& c, const ChunkEntry& donor) {
  if (donor.ram && ram_refs_.count(donor.ram.get()) > 0) {
    c.ram = donor.ram;
    ref_ram(c);
  }
  if (!donor.file.empty() && file_refs_.count(donor.file) > 0) {
    c.file = donor.file;
    c.disk_codec = donor.disk_codec;
    c.disk_bytes = donor.disk_bytes;
    ++file_refs_[c.file];
  }
}

void ChunkTiers::release(const ChunkEntry& c, std::vector<std::string>& files) {
  unref_ram(c);
  if (!c.file.empty() && unref_file(c)) files.push_back(c.file);
}

void ChunkTiers::drop_file(ChunkEntry& c) {
  if (c.file.empty()) return;
  (void)unref_file(c);
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
  file_refs_.clear();
  disk_bytes_ = 0;
}

void ChunkTiers::recount_disk() {
  disk_bytes_ = 0;
  file_refs_.clear();
  for (const auto& [id, s] : sessions_) {
    for (const auto& c : s.chunks) {
      if (c.file.empty()) continue;
      if (file_refs_[c.file]++ == 0) disk_bytes_ += c.disk_bytes;
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
  std::set<const void*> blobs;
  std::set<std::string> files;
  for (const auto& [id, s] : sessions_) {
    for (const auto& c : s.chunks) {
      if (c.ram) {
        if (blobs.insert(c.ram.get()).second) {
          ++ram.chunks;
          ++ram.chunks_by_codec[static_cast<std::size_t>(c.codec)];
          ram.bytes_by_codec[static_cast<std::size_t>(c.codec)] += c.ram->size();
        } else {
          ++ram.shared_refs;
          ram.bytes_saved += c.ram->size();
        }
      }
      if (!c.file.empty()) {
        if (files.insert(c.file).second) {
          ++disk.chunks;
          ++disk.chunks_by_codec[static_cast<std::size_t>(c.disk_codec)];
          disk.bytes_by_codec[static_cast<std::size_t>(c.disk_codec)] += c.disk_bytes;
        } else {
          ++disk.shared_refs;
          disk.bytes_saved += c.disk_bytes;
        }
      }
    }
  }
}

}  // namespace llmd::kvstore
