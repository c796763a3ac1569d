// The chunk store: every session's KV cache as chunks of `chunk_tokens` positions, kept encoded in
// host RAM (T1) and on disk (T2) under byte budgets that are never exceeded, indexed in SQLite.
// It is a cache of the sessions' tokens (the SessionStore holds the truth): a chunk that is missing,
// evicted, stale or corrupt only means its positions are recomputed.
//
// Write-back: after a request, the engine hands the slot's KV state and tokens to write_back(); a
// background thread cuts it into chunks, picks each chunk's codec with the tolerance policy,
// encodes the new or changed ones, keeps them in T1 and writes them to T2. Eviction later only
// drops memory.
//
// Identity: a chunk is the KV of the tokens it was made for. Its prefix hash is the chained hash of
// all the session's tokens up to its end (KV at a position depends on every token before it),
// seeded with the model fingerprint, the KV layout and the chunk format; the index row and the
// blob's own header (chunk.h) both carry it. load() uses a chunk only when the hash of the history
// being restored equals the blob's (and its positions are the ones it restores), so a chunk is
// used only for a history that really produced it: a file copied from another session, an earlier
// history's file put back, or one made under another model is a bad chunk, recomputed. A chunk is
// deliberately not bound to its session: two sessions with the same tokens have the same KV (up to
// the rounding of a different batch split), so another session's chunk of the same prefix is the
// right KV, not a wrong one, and a later step may share such chunks between a uid's sessions.
//
// Eviction: LCTRU (eviction.h) within each tier; chunks of sessions in use (chunk_tiers.h) are kept.
// Disk: besides the budget, the store keeps `disk_reserve` bytes of its file system free: before a
// chunk file is written it evicts its own chunks until free space after the write stays at or
// above the reserve; if it cannot, the chunk is kept in RAM only (counted in reserve_skips, never
// an error for anyone). A write that fails with ENOSPC is met the same way (evict, retry once).
//
// On disk (dir):  index.db            SQLite (WAL): the chunk index (chunk_index.h)
//                 <session>/<idx>-<gen>.kvc   one chunk blob each (chunk.h), written atomically
// A chunk file is written before its index row is committed and old files are removed after, so a
// crash (kill -9 at any moment) leaves either the old or the new chunk indexed, plus unindexed
// files that open() sweeps. A different model, KV layout or chunk format at open() invalidates
// every chunk. A damaged index (at open(), or reported corrupt by SQLite later) is discarded with
// every chunk file; the store starts again empty (RAM copies kept) and keeps serving.
//
// Write-back memory: each queued write-back holds a whole sequence state. The queue is bounded by
// `write_back_queue_bytes`: past it, the oldest queued write-back of a session not in use is
// dropped (counted in writebacks_dropped; its tokens stay the truth and its positions are
// recomputed on its next turn). A session is in use while pinned (its turn runs: the engine pins
// it before it places or restores the turn and unpins it after its write-back is queued) or while a
// load() or stored_chunks() waits for its write-backs; those are never dropped.
//
// The store is cut by job, each with its own header:
//   chunk_index.h   the index in SQLite (all of the store's SQL)       the store's thread (and open())
//   chunk_tiers.h   the chunk table, T1/T2 budgets, LCTRU room-making  under mu_
//   restore_plan.h  restore costs, the match and the cheapest prefix   pure / its own mutex
//   store_queue.h   the queue of write-backs and drops, its byte bound under mu_
//   file_system.h   every file operation (a seam for tests)            stateless
// and ChunkStore orchestrates them: chunk_store.cpp (open, the queue and its thread, pins, stats),
// chunk_store_write.cpp (the store's thread: write-back, drop, the disk reserve, index damage),
// chunk_store_read.cpp (load, stored_chunks, residency: the callers' threads).
//
// Thread-safety: all public methods may be called from any thread. write_back() and
// drop_session() are queued to the store's own thread; load() and stored_chunks() run on the
// caller's thread and wait for the session's queued write-backs first. load() is called by one
// thread at a time (the engine's loader thread): it reuses its read and decode buffers.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"
#include "engine/seq_state.h"
#include "engine/types.h"
#include "kvstore/chunk.h"
#include "kvstore/chunk_tiers.h"
#include "kvstore/file_system.h"
#include "kvstore/policy.h"
#include "kvstore/restore_plan.h"
#include "kvstore/store_queue.h"

namespace llmd::kvstore {

class ChunkIndex;
struct IndexUpdate;

struct ChunkStoreOptions {
  std::filesystem::path dir;              // created if missing
  std::uint32_t chunk_tokens = 64;        // positions per chunk
  std::uint64_t ram_budget = 512ull << 20;   // T1 bytes; 0 disables the RAM tier
  std::uint64_t disk_budget = 8ull << 30;    // T2 bytes; 0 disables the disk tier
  bool disk_zstd = false;                 // exact chunks are zstd-compressed on disk
  std::uint64_t disk_reserve = 256ull << 20;  // bytes of the file system's free space never used
  PolicyParams policy;
  std::shared_ptr<FileSystem> fs;         // null: the real file system
  // The most bytes queued write-backs may hold (their states, tokens, attention) before the
  // oldest of a session not in use is dropped; the write-backs of sessions in use and the one
  // being written come on top. 256 MiB: about five states of 2k tokens of a 135M model.
  std::uint64_t write_back_queue_bytes = 256ull << 20;
  // Anonymous prefix entries (stateless requests' histories, KeyOwner::anonymous) per uid: at most
  // this many keys and this many bytes (RAM and disk copies), least recently used dropped first.
  // 0: no limit of that kind. Sessions never count.
  std::uint32_t prefix_entries_per_uid = 256;
  std::uint64_t prefix_bytes_per_uid = 1ull << 30;
  // The nice value of the store's own thread. 0 (none): at 10, on 2 cores that decoding fills,
  // the next prefill ran up to a quarter faster, but write-backs lagged behind a busy engine so
  // far that a stateless request found its previous history not yet written, and a kill -9 lost
  // it (measured; see ARCHITECTURE.md, Threads). Writing back while the engine idles is the way.
  int writer_nice = 0;
  // Threads that decode one restore's chunks together (the loader's own among them): a T1 restore
  // is memory-bound copying, which one core does not saturate (2 threads: ~0.6x one's time on a
  // 2-core machine). 0: one per CPU, at most 4.
  unsigned restore_threads = 0;
};

// Whose KV a key's chunks are. A load for a key may use the chunks of every key of the same uid
// whose token prefix hashes match (another session with the same system prompt, a fork, a
// stateless request's earlier turn), never another uid's.
struct KeyOwner {
  std::uint32_t uid = 0;
  bool anonymous = false;  // a prefix entry: a stateless request's history, not a session
};

// What find_prefix() sees of a uid's keys for a token sequence.
struct PrefixLookup {
  std::string entry;          // the anonymous key whose chunks are all a prefix of the tokens, the
                              // longest such ("": none)
  std::size_t entry_tokens = 0;
  std::size_t covered = 0;    // the longest prefix all the uid's keys cover together (what load() matches)
};

inline constexpr std::uint32_t kMaxChunkTokens = 4096;

// TierStats: chunk_tiers.h; RestoreCosts: restore_plan.h.
struct StoreStats {
  TierStats ram, disk;
  std::uint64_t write_backs = 0;     // states written back
  std::uint64_t chunks_encoded = 0;  // new or changed chunks encoded
  std::uint64_t write_errors = 0;    // chunk files that could not be written
  std::uint64_t reserve_skips = 0;   // chunks kept in RAM only to keep the disk reserve free
  std::uint64_t index_resets = 0;    // damaged indexes discarded (at open or later)
  std::uint64_t bad_chunks = 0;      // chunks that failed their checks or could not be read
  std::size_t pending = 0;           // queued operations (write-backs, drops)
  std::uint64_t pending_bytes = 0;   // what the queued write-backs hold (the queue's byte bound)
  std::uint64_t writebacks_dropped = 0;  // queued write-backs dropped for the byte bound
  std::uint64_t prefix_entries = 0;      // anonymous prefix entries held (all uids)
  std::uint64_t prefix_bytes = 0;        // their chunks' bytes (RAM and disk copies)
  std::uint64_t prefix_entries_dropped = 0;  // dropped for a uid's prefix_* limits
  std::uint64_t chunks_from_other_keys = 0;  // chunks loads took from another key of the same uid
  std::uint64_t chunks_shared = 0;           // write-backs' chunks stored as references to another key's
  std::string last_error;            // the most recent write or read error, for the status page
  RestoreCosts costs;                // what swap-in planning goes by
};

struct SessionResidency {
  std::uint32_t chunks = 0;          // chunks held in any tier
  std::uint32_t tokens = 0;          // positions they cover
  std::uint32_t ram_chunks = 0, disk_chunks = 0;
  std::uint64_t ram_bytes = 0, disk_bytes = 0;
  std::array<std::uint32_t, kNumCodecs> chunks_by_codec{};  // by the codec of the RAM copy, else the disk copy
};

// Where a restored state goes: what engine::Context says for the destination slot.
struct RestoreTarget {
  engine::SeqId seq = 0;
  std::uint32_t n_stream = 1;
  std::uint32_t stream = 0;
};

struct LoadResult {
  std::size_t matched = 0;      // chunks whose tokens match the history (the most that could load)
  std::size_t tokens = 0;       // history positions covered (cells of the built state)
  std::size_t state_bytes = 0;  // the state is the buffer's first state_bytes bytes (0: nothing)
  std::size_t from_ram = 0, from_disk = 0;  // chunks
  std::size_t bad = 0;      // chunks that failed and were dropped (their positions get recomputed)
  std::size_t from_other = 0;  // chunks taken from another key of the same uid
  double read_ms = 0;       // reading chunk files
  double decode_ms = 0;     // checking and decoding chunks into the state
};

// One copy of a chunk as stored_chunks() finds it: its blob, or why it cannot be used.
using StoredCopy = Result<std::vector<std::uint8_t>>;

// A chunk of a session as the store holds it (stored_chunks()).
struct StoredChunk {
  std::uint32_t index = 0;
  engine::Pos first_pos = 0;     // index * chunk_tokens
  std::uint32_t n_cells = 0;
  Codec codec = Codec::exact;    // the policy's choice: the RAM copy's codec
  Codec disk_codec = Codec::exact;
  std::uint64_t prefix_hash = 0;  // from the index: the hash of the tokens [0, first_pos + n_cells)
  std::optional<StoredCopy> ram;   // T1; nullopt: no RAM copy
  std::optional<StoredCopy> disk;  // T2; nullopt: no file
};

// token_prefix_hash(): restore_plan.h.

class ChunkStore {
 public:
  // Opens or creates the store for a model. Errors: invalid_argument (options), io_error /
  // corrupt (the index cannot be opened).
  static Result<std::unique_ptr<ChunkStore>> open(ChunkStoreOptions options, const engine::KvLayout& layout,
                                                  const std::string& model_fingerprint);
  ~ChunkStore();  // finishes queued write-backs
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  // Queues a write-back of a session's KV: `state` is the sequence state (llama.cpp's format) whose
  // cells hold `tokens` at positions 0..n-1; `attention`: per-position importance observed by the
  // engine (used by the attention policy; may be empty); `owner`: whose KV it is (recorded with the
  // key, durably; without one the key's chunks are never shared).
  // `lineage`: what the KV is (see lineage_seed()): its chunks are hashed from that seed.
  void write_back(std::string session, std::vector<engine::Token> tokens, std::vector<std::uint8_t> state,
                  std::vector<float> attention = {}, std::optional<KeyOwner> owner = std::nullopt,
                  std::uint64_t lineage = 0);
  // Builds the sequence state (llama.cpp's format, the store's layout) of the longest prefix of
  // `history` that valid chunks cover (possibly none) into `buffer`, which is reused between calls
  // (grown, never shrunk) so that a restore allocates nothing. A chunk is valid when its blob's own
  // header says it holds positions [i*chunk_tokens, ...) of exactly this history (its prefix hash)
  // and it passes its checks; the first one that does not ends the plan (counted in bad_chunks; it
  // and the chunks after it are dropped). With `uid`, chunk i may come from any key that uid owns
  // (KeyOwner) when the session's own chunk i does not match: the chunk's own header proves it is
  // the KV of this history's first positions, whoever wrote it. Never from another uid's keys.
  // `lineage`: what KV the caller wants (lineage_seed()); only chunks hashed from its seed match,
  // and for lineage != 0 every matching chunk is loaded (no recompute gives shifted KV back, so
  // the cost model's choice to recompute a cheap suffix does not apply).
  LoadResult load(const std::string& session, std::span<const engine::Token> history, const RestoreTarget& target,
                  std::vector<std::uint8_t>& buffer, std::optional<std::uint32_t> uid = std::nullopt,
                  std::uint64_t lineage = 0);
  // For a stateless request of `uid`: which of its anonymous prefix entries to continue (the one
  // `tokens` extend: all its chunks a prefix of them, the longest) and how much all the uid's keys
  // cover together. Does
  // not wait for queued write-backs and changes nothing.
  PrefixLookup find_prefix(std::uint32_t uid, std::span<const engine::Token> tokens) const;

  // Every chunk the store has for a session, by index (gaps left out), with each copy's blob: the
  // RAM copy as kept; the disk file read. Each copy is checked as load() checks it (checksum,
  // header against the index row: positions, cells, prefix hash); a copy that fails (unreadable,
  // corrupt, another chunk's) comes back as its error, not its bytes. It does not check the prefix
  // hash against the session's tokens (the store has no tokens): that is the caller's, with
  // token_prefix_hash(chain_seed(), ...), as is comparing the KV (decode_chunk) with a recompute.
  // For audits: reads every file, changes nothing, does not count as a use for eviction. Waits for
  // the session's queued write-backs first, like load(); a write-back queued meanwhile may remove
  // a file being read (its copy is then not_found).
  std::vector<StoredChunk> stored_chunks(const std::string& session) const;
  // The seed of the chain of prefix hashes (from the model, KV layout and chunk format): chunk i
  // of a session has prefix hash h_i = token_prefix_hash(h_{i-1}, chunk i's tokens), with
  // h_{-1} = chain_seed().
  std::uint64_t chain_seed() const { return chain_seed_; }
  // Lineages: the KV of a key is either what a prefill of its tokens gives (lineage 0: chains
  // start at chain_seed(), and any key of the same uid with the same tokens has the same KV), or
  // KV whose positions were shifted (a session's "sliding" window: its kept tokens' KV was
  // computed beside tokens that left, so it is not what a prefill of the tokens gives). Such a
  // session draws a random lineage and its chains start at lineage_seed(lineage): its chunks match
  // only loads of that lineage (the session and its forks), never a prefill's, and the hash still
  // binds every token and position. find_prefix() matches lineage 0 only.
  std::uint64_t lineage_seed(std::uint64_t lineage) const;

  // The engine's measured cost of recomputing history: `tokens` took `ms`. With the measured load
  // costs it decides how much of a matched prefix load() loads (recomputing the rest when that
  // is cheaper: a slow disk, a fast accelerator).
  void report_recompute(std::size_t tokens, double ms);
  RestoreCosts costs() const;

  // Pinned sessions' chunks are not evicted (counted: pin twice, unpin twice).
  void pin(const std::string& session);
  void unpin(const std::string& session);
  void drop_session(const std::string& session);  // queued
  // `target` (a new key with no chunks: a fork) takes a reference to each of `source`'s chunks, as
  // they are once `source`'s queued write-backs are done: no bytes copied, each copy counted and
  // removed once (as shared chunks are). Needed where the chunks are the only copy of the KV (a
  // shifted lineage: a recompute does not give it back), so that the fork keeps them when
  // `source` goes on or is deleted. Queued; `owner` as for write_back().
  void share_key(const std::string& source, const std::string& target, KeyOwner owner);
  // Drops the session's chunks from index `first_chunk` on (a rewind cut its tokens before them;
  // the chunks before stay valid). Queued, after the session's queued write-backs.
  void drop_from(const std::string& session, std::uint32_t first_chunk);
  // Forgets every session not in `keep` (sessions deleted while the store could not hear of it);
  // anonymous prefix entries are kept (they are not sessions).
  void retain_only(std::set<std::string> keep);   // queued
  void flush();  // waits until every queued operation is done

  StoreStats stats() const;
  SessionResidency residency(const std::string& session) const;
  const ChunkStoreOptions& options() const { return opt_; }

 private:
  using Chunk = ChunkEntry;
  using Op = StoreOp;
  using Rows = std::vector<std::pair<std::string, std::uint32_t>>;  // index rows (session, idx)

  ChunkStore(ChunkStoreOptions options, const engine::KvLayout& layout);
  // open(), before the thread starts: the index read into the table, unnamed files swept, the
  // disk brought under its budget and reserve. Every file operation goes through opt_.fs.
  Status init(const std::string& model_fingerprint) LLMD_EXCLUDES(mu_);
  void sweep_files() LLMD_EXCLUDES(mu_);
  // Queues an op for the store's thread.
  void enqueue(Op op) LLMD_REQUIRES(mu_);
  // Drops queued write-backs of sessions not in use while the queue holds more than its bound.
  void shed_write_backs() LLMD_REQUIRES(mu_);
  // The chain of chunks a load of `history` for `session` (and `uid`'s other keys) would use, by
  // index: each the best present chunk whose prefix hash is the history's (most cells, a RAM copy,
  // the session's own first), with its key and hash; a partial chunk ends it. `full` holds the
  // history's prefix hashes at each whole chunk's end.
  struct Planned {
    Chunk chunk;
    std::string key;
    std::uint64_t hash = 0;
  };
  std::vector<Planned> plan_chain(const std::string& session, std::optional<std::uint32_t> uid,
                                  std::span<const engine::Token> history, std::span<const std::uint64_t> full,
                                  std::uint64_t seed) const LLMD_REQUIRES(mu_);
  std::vector<std::uint64_t> full_chunk_hashes(std::span<const engine::Token> tokens, std::uint64_t seed) const;
  // The store's thread: drops a uid's least recently used anonymous entries (not in use, not
  // `keep`) while they exceed the per-uid limits.
  void enforce_prefix_limits(std::uint32_t uid, const std::string& keep) LLMD_EXCLUDES(mu_);
  // Until the session's queued write-backs are done (or the store stops); the session counts as
  // in use meanwhile (its write-backs are not dropped).
  void wait_written_back(MutexLock& lock, const std::string& session) const LLMD_REQUIRES(mu_);

  // The store's thread (chunk_store_write.cpp).
  void run() LLMD_EXCLUDES(mu_);
  void do_write_back(Op& op) LLMD_EXCLUDES(mu_);
  void do_drop(const std::string& session, std::uint32_t from) LLMD_EXCLUDES(mu_);
  void do_share(const Op& op) LLMD_EXCLUDES(mu_);
  enum class Written { yes, skipped, failed };  // skipped: the disk reserve; failed: recorded
  Written write_chunk_file(const std::string& session, Chunk& c, std::span<const std::uint8_t> blob,
                           Rows& evicted_rows) LLMD_EXCLUDES(mu_);
  // Removes evicted chunks' files now; their rows go to `rows` for the caller's index update.
  void remove_evicted(const std::vector<EvictedFile>& evicted, Rows& rows);
  // Free bytes of the store's file system short of `reserve` after `bytes` more are written
  // (0: enough room, or the file system cannot say).
  std::uint64_t reserve_shortfall(std::uint64_t bytes) const;
  // Applies an index update; damage (ChunkIndex::is_damage) discards the index and every chunk
  // file (discard_disk_tier), other errors are recorded.
  Status update_index(const IndexUpdate& update) LLMD_EXCLUDES(mu_);
  void discard_disk_tier(const std::string& why) LLMD_EXCLUDES(mu_);
  void remove_rows(const Rows& rows) LLMD_EXCLUDES(mu_);
  std::filesystem::path session_dir(const std::string& session) const { return opt_.dir / session; }
  void record_error(const std::string& message) LLMD_EXCLUDES(mu_);

  const ChunkStoreOptions opt_;
  const engine::KvLayout layout_;
  const CodecRatios ratios_{};
  std::uint64_t chain_seed_ = 0;  // set by init(), then constant
  // The store's thread (and open()); null when a damaged index could not even be recreated: the
  // disk tier is then off until a restart.
  std::unique_ptr<ChunkIndex> index_;
  bool disk_low_ = false;  // the store's thread: the reserve kept the last chunk off disk (logged once)
  // load()'s (one loader at a time, see above), per thread of a restore: a chunk file's bytes,
  // decompression.
  struct Buffers {
    std::vector<std::uint8_t> read, scratch;
  };
  std::vector<Buffers> buffers_;
  unsigned restore_threads_ = 1;  // opt_.restore_threads resolved
  // One chunk of a load: fetched (read from disk unless in RAM, then kept in RAM if it fits),
  // decoded into cells [first_cell, ...) of `out` and checked against the index and `hash`.
  struct Fetched {
    Status ok;
    bool in_ram = false;
    double read_ms = 0, decode_ms = 0;
  };
  Fetched fetch_decode(Chunk& c, const std::string& owner, std::uint64_t hash, std::size_t first_cell,
                       engine::SeqStateWriter& out, Buffers& buf) LLMD_EXCLUDES(mu_);
  // Runs work(buffers) on this thread and on as many more as the load is worth (restore_threads).
  void run_workers(std::size_t n_chunks, std::size_t cells, const std::function<void(Buffers&)>& work);
  RestoreCostModel costs_;  // its own mutex

  mutable Mutex mu_;
  mutable std::condition_variable cv_;  // ops queued / done, write-backs done
  // mutable: stored_chunks() (const) counts itself among the session's waiters.
  mutable ChunkTiers tiers_ LLMD_GUARDED_BY(mu_);
  StoreQueue queue_ LLMD_GUARDED_BY(mu_);
  bool busy_ LLMD_GUARDED_BY(mu_) = false;  // the store's thread runs an op
  bool stop_ LLMD_GUARDED_BY(mu_) = false;
  std::uint64_t gen_ LLMD_GUARDED_BY(mu_) = 0;  // file generation counter
  StoreStats stats_ LLMD_GUARDED_BY(mu_);  // the counters; stats() adds the tiers, queue and costs
  std::thread thread_;
};

}  // namespace llmd::kvstore
