// The engine's slots as a cache of sessions' KV. Each slot is one llama sequence: it holds a
// session's tokens (`cached`, exactly what its KV holds, in order) and, while a job runs on it,
// that job. A session's KV stays in its slot after a job (keep_resident); a later job of the
// session reuses the common prefix of what the slot holds and what the job needs. Idle slots are
// evicted least recently used first when a job needs a slot or cells, those holding a parked
// generation's KV last.
//
// The cache knows slots, not jobs: EngineWorker decides which job goes where and when (admission,
// preemption); the cache picks the slot, reserves it, keeps or cuts its KV, makes room, and when
// a job leaves its slot (finished or parked) records what the slot holds and hands its KV to the
// chunk store's write-back (restore=chunks).
//
// Invariants: a reserved slot (one with a job) is never evicted, cut or reassigned; a slot's
// `cached` is never longer than what its KV holds; a session is pinned in the chunk store from
// occupy() to release()/settle().
//
// Thread-safety: the engine thread only (it owns the llama context), except size(), fixed at
// construction, which any thread may read.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <tuple>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/job.h"
#include "core/worker_stats.h"
#include "engine/context.h"
#include "engine/tokenizer.h"
#include "kvstore/chunk_store.h"

namespace llmd::core {

class SlotCache {
 public:
  // chunks: restore=chunks' store (pins and write-backs), or null. keep_resident=false: nothing
  // is kept after a job (the baseline that recomputes every history).
  SlotCache(engine::Context& ctx, kvstore::ChunkStore* chunks, bool keep_resident);

  std::uint32_t size() const { return n_; }
  std::uint32_t free_slots() const;  // slots without a job
  std::vector<SlotView> views() const;
  // How many of `tokens` the session's slots hold (their longest common prefix); 0 when the
  // session is not resident or keep_resident is off.
  std::size_t resident_prefix(const std::string& session_id, const std::vector<engine::Token>& tokens,
                              std::uint64_t lineage = 0) const;

  // Placing a job. pick(): the slot it should take: its session's own idle slot; else an empty
  // one; else the least recently used idle one; none when every slot has a job.
  std::optional<engine::SeqId> pick(const std::string& session_id) const;
  // Reserves `seq` for `job_id` (from here on nothing evicts it) and keeps of its KV the longest
  // prefix of `need` it holds for `session_id` (keep_resident only): the KV is cut to that prefix,
  // or cleared (a cut llama.cpp refuses clears it too). Returns the prefix's length.
  // Only KV of the job's `lineage` (Job::lineage) is kept.
  std::size_t reserve(engine::SeqId seq, std::uint64_t job_id, const std::string& session_id,
                      const std::vector<engine::Token>& need, std::uint64_t lineage = 0);
  // The job reserved on `seq` did not start after all (no room): the slot is idle again, its KV
  // as reserve() left it.
  void unreserve(engine::SeqId seq);
  // The job takes the reserved slot for its session (empty: a one-off job); the session is pinned
  // in the chunk store until release() or settle(). `owner`: whose KV it is (written back with it).
  void occupy(engine::SeqId seq, const std::string& session_id,
              std::optional<kvstore::KeyOwner> owner = std::nullopt, std::uint64_t lineage = 0);
  // A sliding window move in place (Job::slide): if the idle or reserved slot `seq` holds
  // session_id's KV of slide.from_lineage and its tokens are a prefix of slide.from longer than
  // slide.head, positions [head, cut) are dropped and the rest shifted down (Context::
  // seq_drop_range): the slot then holds from[0, head) + from[cut, held) as KV of `to_lineage`
  // (just the head when it held nothing past the cut).
  // Returns how many tokens it holds then; nullopt when nothing was done (it does not hold that,
  // or the model's memory cannot shift).
  std::optional<std::size_t> slide(engine::SeqId seq, const std::string& session_id, const Slide& slide,
                                   std::uint64_t to_lineage);
  // The idle slot holding an anonymous prefix entry of `uid` (KeyOwner::anonymous) whose KV has
  // the longest common prefix with `tokens`; none when no such slot shares a token (or
  // keep_resident is off).
  struct AnonymousHit {
    engine::SeqId seq = 0;
    std::string key;
    std::size_t tokens = 0;  // the common prefix
    bool whole = false;      // all the slot holds is a prefix of `tokens` (they extend it)
  };
  std::optional<AnonymousHit> best_anonymous(std::uint32_t uid, const std::vector<engine::Token>& tokens) const;
  // An idle slot's KV becomes the start of another key's (a stateless request that leaves the
  // entry the slot held: that entry keeps its chunks, written back already, and is no longer
  // resident).
  void rename(engine::SeqId seq, const std::string& key, std::optional<kvstore::KeyOwner> owner);
  // The slot now holds `tokens` (a swap-in installed them); they must be what its KV holds, as KV
  // of `lineage` (nullopt: as before).
  void set_cached(engine::SeqId seq, std::span<const engine::Token> tokens,
                  std::optional<std::uint64_t> lineage = std::nullopt);
  void touch(engine::SeqId seq);  // used now (LRU)
  const std::vector<engine::Token>& cached(engine::SeqId seq) const;

  // Installs a state built from chunks into `seq`, after making room for its `tokens` cells
  // (running jobs may have taken them meanwhile). On error the slot's KV is cleared.
  Status install(engine::SeqId seq, std::span<const std::uint8_t> state, std::size_t tokens);

  // Leaving a slot. release(): the job ends without leaving anything of its own (failed or
  // cancelled): the slot is idle, the session unpinned; the KV stays as it is.
  void release(engine::SeqId seq, const std::string& session_id);
  // The job on `seq` stops, finished or parked: the slot holds `tokens` (cut to what its KV holds)
  // and is idle; with `save`, its KV is handed to the chunk store's write-back (so that a later
  // eviction only drops memory); the session is unpinned. A one-off job (no session) and the
  // baseline without residency leave nothing behind. With `defer` as well, the write-back waits
  // until the KV is about to leave the slot (evicted, taken by another key or job): a parked
  // generation usually resumes on it first, and then nothing needs writing (see Slot::unsaved).
  void settle(engine::SeqId seq, const std::string& session_id, std::vector<engine::Token> tokens, bool save,
              bool defer = false);
  // The slot's KV and what it says it holds are dropped (its job, if any, stays).
  void clear(engine::SeqId seq);
  void drop_kv(engine::SeqId seq);  // the KV only (the slot says it holds nothing more already)
  // The session was deleted: its idle slots forget it.
  void forget(const std::string& session_id);
  // The session was rewound: its idle slots keep at most the first `n` tokens of their KV (cut,
  // or cleared where llama.cpp refuses the cut).
  void cut(const std::string& session_id, std::size_t n);

  // LRU: drops the KV of the least recently used idle slot that holds any; false if none does.
  bool evict_one_idle();
  // Evicts idle slots until `cells` cells are free in the pool; false if they cannot be.
  bool make_room(std::size_t cells);
  std::uint32_t cells_used() const;

  // For an audit of `session_id`: what its idle slot holds, tokens and real KV state (resident
  // false if no idle slot holds the session, or its state cannot be read).
  AuditCapture capture(const std::string& session_id) const;

 private:
  struct Slot {
    std::string session_id;
    std::optional<kvstore::KeyOwner> owner;  // whose KV (occupy())
    std::vector<engine::Token> cached;  // the tokens the slot's KV holds, in order
    std::uint64_t lineage = 0;          // what KV it is (Job::lineage)
    std::optional<std::uint64_t> job;   // the job that has it reserved or runs on it
    bool unsaved = false;  // settle(save, defer): written back before its KV leaves the slot
    Clock::time_point last_used{};
  };
  // Eviction order of idle slots: least recently used first, but a parked generation's KV (unsaved:
  // its job waits to resume on it) after every other — evicting it costs a write-back and a reload.
  static bool evicts_before(const Slot& a, const Slot& b) {
    return std::tie(a.unsaved, a.last_used) < std::tie(b.unsaved, b.last_used);
  }
  Slot& at(engine::SeqId seq) { return slots_[static_cast<std::size_t>(seq)]; }
  const Slot& at(engine::SeqId seq) const { return slots_[static_cast<std::size_t>(seq)]; }
  void write_back(engine::SeqId seq, const std::string& session_id);
  void save_deferred(engine::SeqId seq);  // the deferred write-back, if one is due

  engine::Context& ctx_;
  kvstore::ChunkStore* const chunks_;
  const bool keep_resident_;
  const std::uint32_t n_;
  std::vector<Slot> slots_;  // n_ of them, by sequence id
};

}  // namespace llmd::core
