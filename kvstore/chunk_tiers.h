// The chunk table and its two tiers: which chunks each session has, where each one is kept (a RAM
// copy in T1, a file in T2), the bytes each tier holds against its budget, and the one
// room-making algorithm both tiers share: LCTRU (eviction.h) over the tier's copies, the chunks
// of sessions in use kept.
//
// It does no I/O and takes no lock of its own. Evicting a disk copy only forgets the file and
// hands it back (EvictedFile): removing the file and its index row is the caller's, outside the
// lock.
//
// Thread-safety: none of its own; the ChunkStore holds it under its mutex (ChunkStore::mu_), so
// every call is made with that mutex held, from any of the store's callers' threads.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kvstore/chunk.h"

namespace llmd::kvstore {

struct TierStats {
  std::uint64_t budget = 0;
  std::uint64_t bytes = 0;
  std::uint64_t chunks = 0;          // copies held (a shared copy once)
  std::uint64_t shared_refs = 0;     // references beyond each copy's first (chunks stored once for several keys)
  std::uint64_t bytes_saved = 0;     // what those references would take as copies of their own
  std::array<std::uint64_t, kNumCodecs> bytes_by_codec{};  // index: Codec value
  std::array<std::uint64_t, kNumCodecs> chunks_by_codec{};
};

// One chunk of a session as the store holds it.
struct ChunkEntry {
  std::uint32_t index = 0;
  std::uint32_t n_cells = 0;     // 0: no chunk at this index (a gap)
  Codec codec = Codec::exact;    // the policy's choice (the RAM copy's codec)
  std::uint64_t prefix_hash = 0;
  std::uint64_t last_use = 0;    // the table's clock (tick())
  // T1 copy; null: none. Several entries of one uid may share one blob (the same chunk: same
  // prefix hash, cells and codec); it is counted once, and freed with its last reference.
  std::shared_ptr<const std::vector<std::uint8_t>> ram;
  // T2 file, "HOLDER/NAME" under the store's directory (HOLDER: the key that wrote it); empty:
  // none. Shared like the RAM copy: counted once, removed with its last reference.
  std::string file;
  Codec disk_codec = Codec::exact;
  std::uint64_t disk_bytes = 0;  // the file's

  bool present() const { return n_cells > 0 && (ram || !file.empty()); }
};

struct SessionEntry {
  std::vector<ChunkEntry> chunks;  // by index
  // Whose KV it is: chunks are found for another key only within one uid (ChunkStore::load).
  // Unknown for keys written before owners were kept: never shared until written back again.
  std::optional<std::uint32_t> uid;
  bool anonymous = false;  // a prefix entry (a stateless request's history), not a session
  int pins = 0;                    // turns running (ChunkStore::pin / unpin)
  int waiters = 0;                 // load() / stored_chunks() calls waiting for its write-backs
  std::size_t pending = 0;         // queued write-backs

  // In use: a turn runs, or a restore or audit waits for its write-backs. Its chunks are not
  // evicted and its queued write-backs are never dropped for the queue's byte bound.
  bool in_use() const { return pins > 0 || waiters > 0; }
};

enum class Tier { ram, disk };

// A disk copy that make_room() evicted: no longer counted; its file and index row are the
// caller's to remove.
struct EvictedFile {
  std::string session;
  std::uint32_t index = 0;
  std::string file;
};

struct RoomRequest {
  std::uint64_t bytes = 0;      // to be added to the tier
  std::uint64_t extra = 0;      // at least this many bytes freed in any case (disk: the reserve's shortfall)
  bool partial = false;         // evict what can be evicted even when that is not enough
  // The chunks of this session before index keep_below are kept (a session restores only a
  // prefix: evicting it for a later chunk of its own would waste both).
  const std::string* keep_session = nullptr;
  std::uint32_t keep_below = 0;
};

class ChunkTiers {
 public:
  ChunkTiers(std::uint64_t ram_budget, std::uint64_t disk_budget);

  // The sessions (a session is in the table while it has chunks, pins, waiters or pending
  // write-backs; see erase_if_idle()).
  SessionEntry* find(const std::string& session);
  const SessionEntry* find(const std::string& session) const;
  SessionEntry& at(const std::string& session);  // created if missing
  // Removes a session that has no chunks left and is neither in use nor has write-backs pending.
  void erase_if_idle(const std::string& session);
  // Records whose KV a key holds (see SessionEntry::uid); the key is created if missing.
  void set_owner(const std::string& key, std::uint32_t uid, bool anonymous);
  // The keys a uid owns (null: none).
  const std::set<std::string>* keys_of(std::uint32_t uid) const;
  const std::map<std::string, SessionEntry>& sessions() const { return sessions_; }
  std::vector<std::string> session_ids() const;

  // A logical clock for LCTRU's recency.
  std::uint64_t tick() { return ++clock_; }

  std::uint64_t budget(Tier t) const { return t == Tier::ram ? ram_budget_ : disk_budget_; }
  std::uint64_t bytes(Tier t) const { return t == Tier::ram ? ram_bytes_ : disk_bytes_; }

  // Frees room in a tier by LCTRU so that `r.bytes` more fit its budget and at least `r.extra`
  // bytes are freed. True when that holds. Without r.partial nothing is evicted when it cannot be
  // done; with it, as much as can be. Disk copies evicted are appended to `evicted` (null: RAM).
  bool make_room(Tier tier, const RoomRequest& r, std::vector<EvictedFile>* evicted = nullptr);

  // Makes room for `bytes` more in RAM (evicting by LCTRU); false if the budget cannot hold them.
  bool room_in_ram(std::uint64_t bytes);
  // Keeps `blob` as c's RAM copy if the RAM budget can make room for it (evicting by LCTRU; a
  // blob held already, by another entry, needs no room); false if not (c unchanged).
  bool keep_in_ram(ChunkEntry& c, std::shared_ptr<const std::vector<std::uint8_t>> blob);
  // Disk bytes counted before a file is written (so that a concurrent room-making sees them),
  // and given back if the write fails. A written file is then adopted (adopt_file: one reference,
  // its bytes already counted).
  void reserve_disk(std::uint64_t bytes) { disk_bytes_ += bytes; }
  void unreserve_disk(std::uint64_t bytes) { disk_bytes_ -= bytes; }
  void adopt_file(const ChunkEntry& c) { file_refs_[c.file] = 1; }
  // c shares `donor`'s copies (the same chunk, another key of the uid): one more reference each.
  void share(ChunkEntry& c, const ChunkEntry& donor);
  // Takes a chunk's copies off both tiers' counts (a shared copy: one reference); a file whose
  // last reference this was goes to `files` for removal once the index no longer names it.
  void release(const ChunkEntry& c, std::vector<std::string>& files);
  // Forgets c's file (one reference; counted off the disk tier with the last) without removing it.
  void drop_file(ChunkEntry& c);
  // Forgets every file (the disk tier was discarded): no chunk has a disk copy any more.
  void forget_all_files();
  // Sets the disk count from the chunks' files (after the index was read at open()).
  void recount_disk();

  // Each tier's budget, bytes, chunks and their split by codec.
  void fill(TierStats& ram, TierStats& disk) const;

 private:
  std::uint64_t ram_budget_, disk_budget_;
  std::uint64_t ram_bytes_ = 0, disk_bytes_ = 0;
  std::uint64_t clock_ = 0;
  std::map<std::string, SessionEntry> sessions_;
  std::map<std::uint32_t, std::set<std::string>> by_uid_;  // keys by SessionEntry::uid
  // References to each copy, so that a shared copy is counted, evicted and removed once.
  std::map<const void*, std::uint32_t> ram_refs_;
  std::map<std::string, std::uint32_t> file_refs_;
  void ref_ram(const ChunkEntry& c);
  void unref_ram(const ChunkEntry& c);
  bool unref_file(const ChunkEntry& c);  // true: that was the last reference (bytes counted off)
};

}  // namespace llmd::kvstore
