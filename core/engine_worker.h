// The engine thread. It owns the Context and follows the scheduler (scheduler/): each step, the
// scheduler picks which waiting jobs take free slots and which running job is preempted, then what
// the step's one llama_decode carries (a token for every generation, prefill chunks by counter);
// the BatchRunner carries it out. Results and text go back through callbacks called on the engine
// thread.
//
// Preemption parks a running job: the runner suspends it (sampler, text stream and positions
// kept), its KV is written back to the chunk store and stays in its slot as an idle session until
// the slot is needed; when the job is admitted again its KV comes back like any session's
// (resident, loaded from chunks, or recomputed) and it continues exactly.
//
// Admission is by KV cells: a job takes a slot only when its history, its prompt left and a little
// room to generate fit beside what the jobs in slots are promised (alone, it always fits). A pool
// that generation still fills drops an idle slot's KV, else parks the most recently admitted job
// the same way; that job waits until its cells fit, so the oldest job always advances.
//
// Every slot's KV is what its bookkeeping says: a slot chosen for a job is reserved before room is
// made (nothing evicts the KV the job reuses), and a job starts only on a slot that holds exactly
// the prefix it claims (else the job fails, "KV check failed", WorkerStats::kv_check_failures).
//
// Slots are a cache (SlotCache, slot_cache.h). A session's KV stays resident in its slot after a
// job (LRU); a later job of the same session reuses the common prefix of what the slot holds and
// the job's history, and decodes only the rest. With a chunk store (restore=chunks), every session
// job's KV is written back after it, and a job whose history is not resident is swapped in: its
// slot is reserved, the loader thread (KvLoader, kv_loader.h) builds the state from chunks while
// the engine keeps decoding, the engine installs it and recomputes what no chunk covered. Without
// one, the history is recomputed (the "restore" part of the prompt); with keep_resident=false as
// well, every job recomputes its whole history: the baseline that the chunk restore is measured
// against.
//
// The pieces and their threads:
//   EngineWorker (engine_worker.cpp: the loop, admission, scheduling; engine_worker_jobs.cpp: a
//     job's life in a slot) — the engine thread (`llmd-engine`) owns the runner, the scheduler,
//     the slots and every job from submit() on; other threads reach it only through the members
//     guarded by mu_.
//   SlotCache — engine thread.   KvLoader — its own thread (`llmd-kvload`).
//   ClientRates — pure, kept under mu_ (the engine thread records, stats() reads).
//
// Heartbeat: the loop beats at every iteration, and every WorkerOptions::heartbeat while it waits
// for work; last_progress() says when it last did. A step that never returns (a hung llama_decode)
// stops the beats: the daemon's systemd watchdog pings only while they come (daemon/systemd.h).
//
// Thread-safety: submit(), forget_session(), cut_session(), request_stop(), join(), stats(),
// last_progress(), n_slots(), kv_layout() and max_seq_len() may be called from any thread (start()
// and join() by the owner); the callbacks run on the engine thread and must not block.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"
#include "core/client_latency.h"
#include "core/client_rates.h"
#include "core/job.h"
#include "core/kv_loader.h"
#include "core/slot_cache.h"
#include "core/worker_stats.h"
#include "engine/batch_runner.h"
#include "engine/context.h"
#include "engine/generation.h"
#include "engine/tokenizer.h"
#include "kvstore/chunk_store.h"
#include "scheduler/scheduler.h"

namespace llmd::core {

struct WorkerOptions {
  bool keep_resident = true;
  // Generations decoded together (`parallel`): the running batch. The other slots hold preempted
  // generations and idle sessions, a cache that yields its cells on demand. 0: one per slot.
  std::uint32_t max_running = 0;
  // restore=chunks: sessions' KV is written back to this store after each job and restored from it
  // when not resident. Null: history that is not resident is recomputed (restore=recompute).
  kvstore::ChunkStore* chunks = nullptr;
  scheduler::Options scheduling;
  // Scheduling weights by client ("1000/app") or uid ("1000"); the client's own entry wins; 1 if none.
  std::map<std::string, double> weights;
  // How often the engine thread beats while it waits for work (see last_progress()); 0: it waits
  // without beating (no watchdog reads the heartbeat).
  std::chrono::milliseconds heartbeat{0};
  // Fault injection, for tests only (the daemon sets it from LLMD_FAULT_ENGINE_STALL_MS): the
  // first decode step sleeps this long before decoding, as a hung llama_decode would. 0: off.
  std::chrono::milliseconds fault_stall_first_step{0};
};

class EngineWorker {
 public:
  EngineWorker(engine::Context& ctx, const engine::Tokenizer& tokenizer, WorkerOptions options);
  ~EngineWorker();  // request_stop(0) + join()

  void start();
  // Queues a job. Errors (job.on_done is not called then): unavailable after request_stop().
  Status submit(Job job) LLMD_EXCLUDES(mu_);
  // The session was deleted: its slot forgets it (and frees the cells) when idle.
  void forget_session(const std::string& session_id) LLMD_EXCLUDES(mu_);
  // The session was rewound to its first `n_tokens` tokens: its idle slot keeps at most that
  // prefix of its KV (the rest is freed), so nothing past the new end stays resident.
  void cut_session(const std::string& session_id, std::size_t n_tokens) LLMD_EXCLUDES(mu_);
  // No new jobs; queued jobs end now (cancelled); running jobs get `grace` to finish, then are
  // cancelled. Returns immediately.
  void request_stop(std::chrono::milliseconds grace) LLMD_EXCLUDES(mu_);
  void join();
  // A copy of what the engine thread last published (after each step), with the per-client rates
  // over the last second. Changes nothing.
  WorkerStats stats() const LLMD_EXCLUDES(mu_);
  // When the engine thread last showed progress (the heartbeat): an iteration of its loop, or a
  // wake-up while it waits for work (every WorkerOptions::heartbeat). The construction time until
  // the thread runs.
  Clock::time_point last_progress() const {
    return Clock::time_point(Clock::duration(heartbeat_.load(std::memory_order_relaxed)));
  }
  std::uint32_t n_slots() const { return slots_.size(); }     // fixed at construction
  std::uint32_t max_running() const { return max_running_; }  // at most n_slots(); fixed at construction
  const engine::KvLayout& kv_layout() const { return ctx_.kv_layout(); }  // fixed at construction
  std::uint32_t max_seq_len() const { return ctx_.max_seq_len(); }        // fixed at construction

 private:
  struct Running {
    Job job;
    std::optional<Clock::time_point> admitted;  // first placed in a slot
    std::size_t reused = 0;    // history tokens that were resident
    std::size_t restored = 0;  // history tokens recomputed
    std::size_t replayed = 0;  // tokens recomputed to resume after preemptions
    std::size_t loaded = 0;    // history tokens restored from chunks
    double read_ms = 0, decode_ms = 0;
    // Parked (preempted): the suspended generation and what its KV held, to be brought back.
    std::optional<engine::BatchRunner::Suspended> suspended;
    std::vector<engine::Token> kv_tokens;
    std::optional<AuditCapture> audit;  // audit jobs, from their placement on
    std::uint32_t steps = 0;  // decode steps taken since it was last (re)started in a slot
    bool slide_load = false;  // being swapped in as Job::slide's `from`, to be slid when installed
    bool first_token = false; // Job::on_first_token was called
    // adopt_prefix chose to share the prompt KV of a running job: (its slot, how many positions).
    std::optional<std::pair<engine::SeqId, std::size_t>> share_from;
  };
  enum class Placed { started, restoring, no_room, failed };
  static constexpr std::size_t kGenerationHeadroom = 16;
  static constexpr std::uint32_t kPreemptQuantum = 4;  // steps a (re)started job runs before it may be preempted

  // The loop (engine_worker.cpp).
  void run() LLMD_EXCLUDES(mu_);
  bool has_news() const LLMD_REQUIRES(mu_);
  void wait_for_news(MutexLock& lock) LLMD_REQUIRES(mu_);
  void beat() { heartbeat_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed); }
  void take_incoming(std::deque<Job>& incoming);
  void schedule_slots();
  void step();
  void publish_stats() LLMD_EXCLUDES(mu_);
  // What the job's slot must hold before it (re)starts: its history, or a parked job's KV.
  static const std::vector<engine::Token>& needed(const Running& run);
  double weight_of(const std::string& client) const;

  // A job's life in a slot (engine_worker_jobs.cpp).
  // Places a job in a slot (reserved at once: nothing evicts it meanwhile) if its cells fit.
  Placed place(Running& run);
  // A stateless job (Job::anonymous) takes the key of its uid's prefix entry that holds the
  // longest prefix of its prompt (an idle slot's KV, else chunks), or a new key; that prefix
  // becomes its history (reused or restored like a session's) and the rest its input. A session's
  // first turn keeps its key, and the prefix its uid's chunks cover becomes its history. False
  // when neither applies. unadopt() undoes it (the job was not placed). The split changes no
  // total: usage counts history + input, and the Service saves what it submitted.
  // A running job of the same uid whose decoded prompt shares a prefix with the job's is a source
  // too (Running::share_from): its KV cells are shared, not copied (Context::seq_share_prefix).
  bool adopt_prefix(Running& run);
  static void unadopt(Running& run);
  // The running stateless job of `uid` (never parked, plain lineage) whose KV holds the longest
  // prefix of `tokens` in its history and decoded prompt: (its slot, that prefix).
  std::optional<std::pair<engine::SeqId, std::size_t>> running_prefix(std::uint32_t uid,
                                                                      const std::vector<engine::Token>& tokens) const;
  std::string new_prefix_key(std::uint32_t uid);
  // Cells a job needs placed (needed + prompt left), a little room to generate, and what the jobs
  // in slots are promised: admission is by cells (see place()).
  static std::size_t footprint(const Running& run);
  static std::size_t headroom(const Running& run);
  std::size_t committed_cells() const;
  // Hands the job to the runner with `reuse` tokens of needed(run) already in its slot; checks
  // that the slot holds exactly those.
  void start(engine::SeqId seq, Running run, std::size_t reuse);
  void kv_check_failed(engine::SeqId seq, Job& job, const Error& why) LLMD_EXCLUDES(mu_);
  // Preemption (for fairness: `preempted`) or giving way to a full KV pool (parked): suspends the
  // job on `seq`, saves its KV, charges its client (Scheduler::note_displaced) and requeues it.
  void park(engine::SeqId seq, bool preempted);
  void release_slot(engine::SeqId seq, const Job& job);
  // Swap-in: the loader hands built states over (deliver, on its thread); the engine installs them.
  void deliver(engine::SeqId seq, kvstore::LoadResult result) LLMD_EXCLUDES(mu_);
  void finish_restores() LLMD_EXCLUDES(mu_);
  void complete(engine::SeqId seq, engine::SequenceOutcome outcome) LLMD_EXCLUDES(mu_);
  void fail(Job& job, Error error, engine::FinishReason finish);

  engine::Context& ctx_;
  const engine::Tokenizer& tok_;
  const WorkerOptions options_;
  const std::uint32_t max_running_;  // options_.max_running, at most the slots
  engine::BatchRunner runner_;

  // Engine-thread state.
  SlotCache slots_;
  scheduler::Scheduler sched_;
  std::map<engine::SeqId, Running> running_;
  std::map<std::uint64_t, Running> waiting_;     // queued in the scheduler by job id: new or parked
  std::map<engine::SeqId, Running> restoring_;  // jobs whose session is being swapped in
  double park_ms_ = 0;  // time spent in park(), for stats
  std::uint64_t prefix_keys_ = 0;  // new_prefix_key()'s counter, seeded at random (keys outlive the process)
  std::chrono::milliseconds stall_fault_;  // the fault still to inject (fault_stall_first_step)

  // Shared with other threads.
  mutable Mutex mu_;
  std::condition_variable cv_;  // the engine waits on it for news (has_news())
  std::deque<Job> incoming_ LLMD_GUARDED_BY(mu_);
  std::vector<std::string> forget_ LLMD_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::size_t>> cuts_ LLMD_GUARDED_BY(mu_);  // cut_session()
  bool stopping_ LLMD_GUARDED_BY(mu_) = false;
  Clock::time_point stop_deadline_ LLMD_GUARDED_BY(mu_){};
  WorkerStats stats_ LLMD_GUARDED_BY(mu_);
  ClientRates rates_ LLMD_GUARDED_BY(mu_);
  ClientLatencies latencies_ LLMD_GUARDED_BY(mu_);
  std::vector<std::pair<engine::SeqId, kvstore::LoadResult>> loaded_ LLMD_GUARDED_BY(mu_);  // built states
  std::atomic<Clock::rep> heartbeat_{Clock::now().time_since_epoch().count()};
  std::thread thread_;

  // restore=chunks: the swap-in thread. Its deliveries go to loaded_.
  std::unique_ptr<KvLoader> loader_;
};

}  // namespace llmd::core
