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
// Slots are a cache. A session's KV stays resident in its slot after a job (LRU); a later job of the
// same session reuses the common prefix of what the slot holds and the job's history, and decodes
// only the rest. With a chunk store (restore=chunks), every session job's KV is written back after
// it, and a job whose history is not resident is swapped in: its slot is reserved, the loader
// thread builds the state from chunks while the engine keeps decoding, the engine installs it and
// recomputes what no chunk covered. Without one, the history is recomputed (the "restore" part of
// the prompt); with keep_resident=false as well, every job recomputes its whole history: the
// baseline that the chunk restore is measured against.
//
// Thread-safety: submit(), forget_session(), request_stop(), join(), stats() and n_slots() may be
// called from any thread; the callbacks run on the engine thread and must not block.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "engine/batch_runner.h"
#include "engine/context.h"
#include "engine/generation.h"
#include "engine/tokenizer.h"
#include "kvstore/chunk_store.h"
#include "scheduler/scheduler.h"

namespace llmd::core {

using Clock = std::chrono::steady_clock;

struct Timings {  // milliseconds
  double queue = 0;    // submitted -> admitted to a slot
  double restore = 0;  // bringing back history that was not resident: read + decode + recompute
  double restore_read = 0;       // reading KV chunks from disk
  double restore_decode = 0;     // checking, decoding and installing KV chunks into the slot
  double restore_recompute = 0;  // recomputing history no chunk covered
  double prefill = 0;  // the request's own prompt tokens, until the first token
  double decode = 0;   // first token -> end
  double ttft = 0;     // submitted -> first token
};

struct Usage {
  std::int32_t prompt_tokens = 0;      // the request's own tokens
  std::int32_t completion_tokens = 0;  // generated tokens
  std::int32_t cached_tokens = 0;      // history found resident in the slot
  std::int32_t restored_tokens = 0;    // history recomputed
  std::int32_t loaded_tokens = 0;      // history restored from KV chunks (T1/T2)
};

// What a KV audit job captured (see Job::audit_of): the KV of the session's history recomputed
// from nothing in a scratch slot, and what the session's own slot held when the job was placed.
struct AuditCapture {
  std::vector<std::uint8_t> reference;  // llama.cpp's sequence state of the recomputed history
  bool resident = false;                // the session was in a slot
  std::uint32_t slot = 0;
  std::vector<engine::Token> resident_tokens;  // what the engine says that slot holds
  std::vector<std::uint8_t> resident_state;    // and what it really holds
};

struct JobResult {
  engine::FinishReason finish = engine::FinishReason::none;
  std::vector<engine::Token> generated;
  std::string text;
  Usage usage;
  Timings timings;
  std::uint32_t seed = 0;
  std::optional<Error> error;  // set when finish is error (or the job could not run)
  std::optional<AuditCapture> audit;  // audit jobs
};

struct Job {
  std::uint64_t id = 0;
  std::string session_id;                // empty: no slot affinity (a one-off completion)
  std::vector<engine::Token> history;    // what the sequence must hold before `input`
  std::vector<engine::Token> input;      // the request's tokens; not empty
  engine::GenerateParams params;
  std::string client;  // who is served and charged: "1000" (a uid) or "1000/app"; empty: "anonymous"
  scheduler::Priority priority = scheduler::Priority::interactive;
  std::shared_ptr<std::atomic<bool>> cancelled;  // set by anyone; the job ends within one step
  std::function<void(const std::string& text)> on_text;  // text as it becomes showable
  std::function<void(JobResult)> on_done;                 // exactly once
  Clock::time_point submitted = Clock::now();
  // Non-empty: a KV audit of this session. The job has no session (session_id empty: it never
  // reuses or writes back anything); `input` is the session's whole token sequence, recomputed in
  // a scratch slot with max_tokens 1. When it is placed, the session's own slot (if idle) is
  // captured; when it ends, the recomputed state: JobResult::audit.
  std::string audit_of;
};

struct SlotView {
  std::uint32_t index = 0;
  std::string session_id;  // empty: holds no session
  std::uint32_t cells = 0;  // KV cells in use
  bool busy = false;
};

struct ClientStats {
  scheduler::ClientView view;  // counters, tokens served, queued/running
  // Over the last window: at least 1 s, rolled by stats() calls (so with llmctl top polling every
  // second, the last second).
  double tokens_per_s = 0;     // generated tokens per second
  double share = 0;            // its part of all weighted service, [0, 1]
};

struct WorkerStats {
  std::size_t queued = 0;
  std::size_t running = 0;
  std::uint64_t jobs_done = 0;
  std::uint64_t tokens_generated = 0;
  std::uint64_t preemptions = 0;
  // Slots whose KV was found not to be what the bookkeeping said (the job failed, the slot was
  // cleared): a bug if ever non-zero.
  std::uint64_t kv_check_failures = 0;
  std::string policy;  // fair | fifo
  std::vector<SlotView> slots;
  std::vector<ClientStats> clients;
};

struct WorkerOptions {
  bool keep_resident = true;
  // restore=chunks: sessions' KV is written back to this store after each job and restored from it
  // when not resident. Null: history that is not resident is recomputed (restore=recompute).
  kvstore::ChunkStore* chunks = nullptr;
  scheduler::Options scheduling;
  // Scheduling weights by client ("1000/app") or uid ("1000"); the client's own entry wins; 1 if none.
  std::map<std::string, double> weights;
};

class EngineWorker {
 public:
  EngineWorker(engine::Context& ctx, const engine::Tokenizer& tokenizer, WorkerOptions options);
  ~EngineWorker();  // request_stop(0) + join()

  void start();
  // Queues a job. Errors (job.on_done is not called then): unavailable after request_stop().
  Status submit(Job job);
  // The session was deleted: its slot forgets it (and frees the cells) when idle.
  void forget_session(const std::string& session_id);
  // No new jobs; queued jobs end now (cancelled); running jobs get `grace` to finish, then are
  // cancelled. Returns immediately.
  void request_stop(std::chrono::milliseconds grace);
  void join();
  WorkerStats stats() const;
  std::uint32_t n_slots() const { return static_cast<std::uint32_t>(slots_.size()); }  // fixed at construction
  const engine::KvLayout& kv_layout() const { return ctx_.kv_layout(); }               // fixed at construction
  std::uint32_t max_seq_len() const { return ctx_.max_seq_len(); }                     // fixed at construction

 private:
  struct Slot {
    std::string session_id;
    std::vector<engine::Token> cached;  // the tokens the slot's KV holds, in order
    std::optional<std::uint64_t> job;   // running job id
    Clock::time_point last_used{};
  };
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
  };
  enum class Placed { started, restoring, no_room, failed };
  static constexpr std::size_t kGenerationHeadroom = 16;
  static constexpr std::uint32_t kPreemptQuantum = 4;  // steps a (re)started job runs before it may be preempted

  void run();
  void take_incoming(std::deque<Job>& incoming);
  void schedule_slots();
  void step();
  // What the job's slot must hold before it (re)starts: its history, or a parked job's KV.
  static const std::vector<engine::Token>& needed(const Running& run);
  double weight_of(const std::string& client) const;
  static std::size_t common_prefix(const std::vector<engine::Token>& a, const std::vector<engine::Token>& b);
  struct LoadTask {
    engine::SeqId seq = 0;
    std::string session_id;
    std::span<const engine::Token> history;  // the restoring job's (restoring_ keeps it alive)
    kvstore::RestoreTarget target;
  };

  // Places a job in a slot (reserved at once: nothing evicts it meanwhile) if its cells fit.
  Placed place(Running& run);
  // Cells a job needs placed (needed + prompt left), a little room to generate, and what the jobs
  // in slots are promised: admission is by cells (see place()).
  static std::size_t footprint(const Running& run);
  static std::size_t headroom(const Running& run);
  std::size_t committed_cells() const;
  // Hands the job to the runner with `reuse` tokens of needed(run) already in its slot; checks
  // that the slot holds exactly those.
  void start(engine::SeqId seq, Running run, std::size_t reuse);
  void kv_check_failed(engine::SeqId seq, Job& job, const Error& why);
  void capture_resident(Running& run);
  // Preemption: suspends the job on `seq`, saves its KV, and puts it back in the queue.
  void park(engine::SeqId seq);
  void release_slot(engine::SeqId seq, const Job& job);
  // Swap-in: the loader thread builds states from chunks; the engine installs them.
  void load_loop();
  void finish_restores();
  void write_back(engine::SeqId seq, const std::string& session_id);
  std::optional<engine::SeqId> pick_slot(const Job& job);
  bool evict_one_idle();
  bool make_room(std::size_t cells_needed);
  std::uint32_t cells_used() const;
  void complete(engine::SeqId seq, engine::SequenceOutcome outcome);
  void fail(Job& job, Error error, engine::FinishReason finish);
  void publish_stats();

  engine::Context& ctx_;
  const engine::Tokenizer& tok_;
  const WorkerOptions options_;
  engine::BatchRunner runner_;

  // Engine-thread state.
  std::vector<Slot> slots_;
  scheduler::Scheduler sched_;
  std::map<engine::SeqId, Running> running_;
  std::map<std::uint64_t, Running> waiting_;     // queued in the scheduler by job id: new or parked
  std::map<engine::SeqId, Running> restoring_;  // jobs whose session is being swapped in
  std::uint64_t preemptions_ = 0;
  // Per-client rates for stats(): the window's start and the counters then. GUARDED_BY(mu_)
  mutable Clock::time_point rate_start_ = Clock::now();
  mutable std::map<std::string, std::pair<std::uint64_t, double>> rate_base_;  // output tokens, service
  mutable std::map<std::string, std::pair<double, double>> rates_;             // tokens/s, share

  // Shared with other threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> incoming_;                  // GUARDED_BY(mu_)
  std::vector<std::string> forget_;           // GUARDED_BY(mu_)
  bool stopping_ = false;                     // GUARDED_BY(mu_)
  Clock::time_point stop_deadline_{};         // GUARDED_BY(mu_)
  WorkerStats stats_;                         // GUARDED_BY(mu_)
  std::vector<std::pair<engine::SeqId, kvstore::LoadResult>> loaded_;  // GUARDED_BY(mu_): built states
  std::thread thread_;

  // The loader thread (restore=chunks): one swap-in at a time into load_buf_, which it reuses (no
  // page faults per restore) once the engine has installed the previous state.
  std::mutex load_mu_;
  std::condition_variable load_cv_;
  std::deque<LoadTask> load_queue_;  // GUARDED_BY(load_mu_)
  bool load_buf_busy_ = false;       // GUARDED_BY(load_mu_)
  bool load_stop_ = false;           // GUARDED_BY(load_mu_)
  std::vector<std::uint8_t> load_buf_;  // loader writes, engine reads, handed over by load_buf_busy_
  std::thread loader_;
};

}  // namespace llmd::core
