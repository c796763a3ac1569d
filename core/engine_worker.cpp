// The engine thread: its loop, the scheduler's two phases, stats (see engine_worker.h). A job's
// life in a slot (placing, swap-in, preemption, completion) is in engine_worker_jobs.cpp.
#include "core/engine_worker.h"

#include <pthread.h>

#include <algorithm>

#include <spdlog/spdlog.h>

namespace llmd::core {
namespace {

// Clients the scheduler remembers while idle (for lifting and for `llmctl top`).
constexpr std::size_t kIdleClientsKept = 256;

}  // namespace

EngineWorker::EngineWorker(engine::Context& ctx, const engine::Tokenizer& tokenizer, WorkerOptions options)
    : ctx_(ctx),
      tok_(tokenizer),
      options_(std::move(options)),
      max_running_(options_.max_running == 0 ? ctx.n_slots() : std::min(options_.max_running, ctx.n_slots())),
      runner_(ctx, tokenizer),
      slots_(ctx, options_.chunks, options_.keep_resident),
      sched_(options_.scheduling),
      stall_fault_(options_.fault_stall_first_step) {
  runner_.on_token([this](engine::SeqId seq, engine::Token token, std::string_view text, const engine::TokenLogprob* lp) {
    auto it = running_.find(seq);
    if (it == running_.end()) return;
    if (token != engine::kNoToken && !it->second.first_token) {
      it->second.first_token = true;
      if (it->second.job.on_first_token) it->second.job.on_first_token();
    }
    if (text.empty() && lp == nullptr) return;
    // The token's log-probabilities before the text it makes showable (which may come later).
    if (lp != nullptr && it->second.job.on_logprob) it->second.job.on_logprob(*lp);
    if (!text.empty() && it->second.job.on_text) it->second.job.on_text(std::string(text));
  });
  if (options_.chunks) {
    loader_ = std::make_unique<KvLoader>(*options_.chunks, [this](engine::SeqId seq, kvstore::LoadResult result) {
      deliver(seq, std::move(result));
    });
  }
  publish_stats();
}

EngineWorker::~EngineWorker() {
  request_stop(std::chrono::milliseconds(0));
  join();
}

void EngineWorker::start() {
  beat();
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "llmd-engine");
  if (loader_) loader_->start();
}

Status EngineWorker::submit(Job job) {
  if (job.input.empty()) return Error(Errc::invalid_argument, "a job needs input tokens");
  if (!job.cancelled) job.cancelled = std::make_shared<std::atomic<bool>>(false);
  if (job.client.empty()) job.client = "anonymous";
  {
    MutexLock lock(mu_);
    if (stopping_) return Error(Errc::unavailable, "the daemon is shutting down");
    incoming_.push_back(std::move(job));
    ++stats_.queued;
  }
  cv_.notify_one();
  return {};
}

void EngineWorker::forget_session(const std::string& session_id) {
  {
    MutexLock lock(mu_);
    forget_.push_back(session_id);
  }
  cv_.notify_one();
}

void EngineWorker::cut_session(const std::string& session_id, std::size_t n_tokens) {
  {
    MutexLock lock(mu_);
    cuts_.emplace_back(session_id, n_tokens);
  }
  cv_.notify_one();
}

void EngineWorker::request_stop(std::chrono::milliseconds grace) {
  {
    MutexLock lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_deadline_ = Clock::now() + grace;
    } else {
      stop_deadline_ = std::min(stop_deadline_, Clock::now() + grace);
    }
  }
  cv_.notify_one();
}

void EngineWorker::join() {
  if (thread_.joinable()) thread_.join();
  if (loader_) loader_->stop();
}

WorkerStats EngineWorker::stats() const {
  MutexLock lock(mu_);
  WorkerStats out = stats_;
  const auto now = Clock::now();
  rates_.fill(now, out.clients);
  latencies_.fill(now, out.clients);
  return out;
}

const std::vector<engine::Token>& EngineWorker::needed(const Running& run) {
  return run.suspended ? run.kv_tokens : run.job.history;
}

double EngineWorker::weight_of(const std::string& client) const {
  if (auto it = options_.weights.find(client); it != options_.weights.end()) return it->second;
  const std::string uid = client.substr(0, client.find('/'));
  if (auto it = options_.weights.find(uid); it != options_.weights.end()) return it->second;
  return 1.0;
}

// New jobs join the scheduler's queue; a job over a scheduler quota fails with its error.
void EngineWorker::take_incoming(std::deque<Job>& incoming) {
  const auto now = Clock::now();
  for (Job& job : incoming) {
    // History the session's slot already holds is neither prompt nor swap-in work.
    const std::size_t resident = slots_.resident_prefix(job.session_id, job.history, job.lineage);
    scheduler::Request req{job.id, job.client, job.priority, static_cast<std::uint32_t>(job.input.size()),
                           static_cast<std::uint32_t>(job.history.size() - resident)};
    sched_.set_weight(job.client, weight_of(job.client));
    if (auto st = sched_.submit(req, now); !st) {
      fail(job, st.error(), engine::FinishReason::error);
      continue;
    }
    const std::uint64_t id = job.id;
    Running run;
    run.job = std::move(job);
    waiting_.emplace(id, std::move(run));
  }
  incoming.clear();
  sched_.forget_idle(kIdleClientsKept);
}

// Phase 1: preemptions, then admissions into free slots.
void EngineWorker::schedule_slots() {
  if (waiting_.empty()) return;
  scheduler::StepInput in;
  // A job (re)admitted is not preempted before it has had a few steps: admission charges it for the
  // history it brings back, which can put it past the preemption gap at once, and a job preempted
  // before its first step would never advance (admitted, charged, preempted, again and again).
  for (const auto& [seq, r] : running_) {
    in.running.push_back({r.job.id, runner_.prompt_left(seq), r.steps >= kPreemptQuantum});
  }
  for (const auto& [seq, r] : restoring_) in.running.push_back({r.job.id, 0, false});
  // Room in the running batch, and a sequence to hold the job's KV.
  const std::size_t active = running_.size() + restoring_.size();
  in.free_slots = active >= max_running_ ? 0 : std::min<std::uint32_t>(slots_.free_slots(), max_running_ - active);
  const scheduler::SlotPlan plan = sched_.schedule_slots(in);
  for (std::uint64_t id : plan.preempt) {
    for (const auto& [seq, r] : running_) {
      if (r.job.id == id) {
        park(seq, /*preempted=*/true);
        break;
      }
    }
  }
  // A job that waits for cells blocks the ones after it in this round: smaller jobs must not
  // keep taking the cells it waits for (it comes first again once its client is furthest behind).
  bool blocked = false;
  for (std::uint64_t id : plan.admit) {
    auto it = waiting_.find(id);
    if (it == waiting_.end()) {
      sched_.remove(id);
      continue;
    }
    switch (blocked ? Placed::no_room : place(it->second)) {
      case Placed::started:
      case Placed::restoring:
      case Placed::failed: waiting_.erase(it); break;
      case Placed::no_room: {
        // No slot or no cells after all: back in the queue, in its place.
        blocked = true;
        const Running& r = it->second;
        const std::uint32_t prompt = r.suspended ? r.suspended->prompt_left() : static_cast<std::uint32_t>(r.job.input.size());
        sched_.requeue(id, prompt, static_cast<std::uint32_t>(needed(r).size()));
        break;
      }
    }
  }
}

// Phase 2: one decode step carrying what the scheduler picked.
void EngineWorker::step() {
  if (runner_.empty()) return;
  std::vector<scheduler::Running> running;
  std::map<std::uint64_t, engine::SeqId> seq_of;
  for (const auto& [seq, r] : running_) {
    const std::uint32_t left = runner_.prompt_left(seq);
    running.push_back({r.job.id, left, true, left > runner_.replay_left(seq)});
    seq_of[r.job.id] = seq;
  }
  const scheduler::TokenPlan plan = sched_.schedule_tokens(running, ctx_.n_batch());
  engine::StepLimits limits;
  for (const auto& [id, n] : plan.prefill) limits.prefill.emplace_back(seq_of.at(id), n);
  // Generations the scheduler gave no token this step (paced) sit it out.
  for (const scheduler::Running& r : running) {
    if (r.prefill_left == 0 && std::find(plan.decode.begin(), plan.decode.end(), r.id) == plan.decode.end()) {
      limits.hold.push_back(seq_of.at(r.id));
    }
  }
  if (stall_fault_.count() > 0) {
    // Fault injection (tests only): this step hangs, as a llama_decode that never returns would.
    spdlog::warn("engine: fault injection: this decode step stalls for {} ms", stall_fault_.count());
    std::this_thread::sleep_for(std::exchange(stall_fault_, std::chrono::milliseconds(0)));
  }
  auto more = runner_.step(&limits);
  if (more) {
    for (auto& [seq, r] : running_) ++r.steps;
    return;
  }
  if (more.error().code() != Errc::resource_exhausted) {
    for (auto& [seq, r] : running_) runner_.cancel(seq, engine::FinishReason::error);
    return;
  }
  // The pool is full: drop an idle slot's KV; if there is none, the newest job gives way (parked
  // until cells are free), or, alone, ends with context_full.
  if (slots_.evict_one_idle()) return;
  engine::SeqId newest = -1;
  Clock::time_point newest_t{};
  for (auto& [seq, r] : running_) {
    if (newest < 0 || r.admitted > newest_t) {
      newest = seq;
      newest_t = r.admitted.value_or(Clock::now());
    }
  }
  if (newest < 0) return;
  if (running_.size() > 1) {
    spdlog::info("engine: the KV pool is full ({} cells); the newest job gives way until its cells are free",
                 ctx_.n_ctx());
    park(newest, /*preempted=*/false);
  } else {
    runner_.cancel(newest, engine::FinishReason::context_full);
  }
}

void EngineWorker::publish_stats() {
  std::vector<SlotView> views = slots_.views();
  std::vector<ClientStats> clients;
  for (auto& c : sched_.clients()) clients.push_back({std::move(c), 0.0, 0.0});
  const auto now = Clock::now();
  MutexLock lock(mu_);
  rates_.record(now, clients);
  stats_.slots = std::move(views);
  stats_.clients = std::move(clients);
  stats_.running = running_.size() + restoring_.size();
  stats_.queued = waiting_.size() + incoming_.size();
  stats_.preemptions = sched_.preemptions();
  stats_.parks = sched_.parks();
  stats_.park_ms = park_ms_;
  stats_.policy = std::string(scheduler::policy_name(options_.scheduling.policy));
}

bool EngineWorker::has_news() const {
  return stopping_ || !incoming_.empty() || !forget_.empty() || !cuts_.empty() || !loaded_.empty();
}

// Waits until there is news; with a heartbeat, wakes to beat at least every period meanwhile.
void EngineWorker::wait_for_news(MutexLock& lock) {
  while (!has_news()) {
    if (options_.heartbeat.count() > 0) {
      lock.wait_until(cv_, Clock::now() + options_.heartbeat);
      beat();
    } else {
      lock.wait(cv_);
    }
  }
}

void EngineWorker::run() {
  while (true) {
    beat();
    bool stopping = false;
    bool past_deadline = false;
    std::vector<std::string> forget;
    std::vector<std::pair<std::string, std::size_t>> cuts;
    std::deque<Job> incoming;
    {
      MutexLock lock(mu_);
      if (waiting_.empty() && running_.empty() && restoring_.empty()) {
        wait_for_news(lock);
      } else if (running_.empty() && loaded_.empty() && !restoring_.empty()) {
        // Only swap-ins in progress: wait for one (or for anything new).
        wait_for_news(lock);
      }
      incoming.swap(incoming_);
      forget.swap(forget_);
      cuts.swap(cuts_);
      stopping = stopping_;
      past_deadline = stopping_ && Clock::now() >= stop_deadline_;
    }
    take_incoming(incoming);
    for (const auto& id : forget) slots_.forget(id);
    for (const auto& [id, n] : cuts) slots_.cut(id, n);
    // Queued jobs that were cancelled end now; when stopping, so do the ones that never started
    // (parked ones may still finish within the grace period).
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      Running& r = it->second;
      const bool end = r.job.cancelled->load() || (stopping && (!r.suspended || past_deadline));
      if (!end) {
        ++it;
        continue;
      }
      sched_.remove(r.job.id);
      fail(r.job, stopping ? Error(Errc::cancelled, "the daemon is shutting down") : Error(Errc::cancelled, "cancelled while queued"),
           engine::FinishReason::cancelled);
      it = waiting_.erase(it);
    }
    if (past_deadline) {
      for (auto& [seq, r] : running_) r.job.cancelled->store(true);
    }
    finish_restores();
    // Cancellation requested by clients (or the shutdown deadline).
    for (auto& [seq, r] : running_) {
      if (r.job.cancelled->load()) runner_.cancel(seq);
    }
    schedule_slots();
    step();
    for (engine::SeqId seq : runner_.take_finished()) {
      auto o = runner_.take_outcome(seq);
      if (o) complete(seq, std::move(*o));
    }
    publish_stats();
    if (stopping && waiting_.empty() && running_.empty() && restoring_.empty()) {
      MutexLock lock(mu_);
      if (incoming_.empty()) return;
    }
  }
}

}  // namespace llmd::core
