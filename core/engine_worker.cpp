// The engine thread: its loop, the scheduler's two phases, stats (see engine_worker.h). Placing
// jobs in slots, swap-in, preemption and completion are in engine_worker_slots.cpp.
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
      runner_(ctx, tokenizer),
      slots_(ctx.n_slots()),
      sched_(options_.scheduling) {
  runner_.on_token([this](engine::SeqId seq, engine::Token, std::string_view text) {
    if (text.empty()) return;
    auto it = running_.find(seq);
    if (it != running_.end() && it->second.job.on_text) it->second.job.on_text(std::string(text));
  });
  publish_stats();
}

EngineWorker::~EngineWorker() {
  request_stop(std::chrono::milliseconds(0));
  join();
}

void EngineWorker::start() {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "llmd-engine");
  if (options_.chunks) {
    loader_ = std::thread([this] { load_loop(); });
    pthread_setname_np(loader_.native_handle(), "llmd-kvload");
  }
}

Status EngineWorker::submit(Job job) {
  if (job.input.empty()) return Error(Errc::invalid_argument, "a job needs input tokens");
  if (!job.cancelled) job.cancelled = std::make_shared<std::atomic<bool>>(false);
  if (job.client.empty()) job.client = "anonymous";
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Error(Errc::unavailable, "the daemon is shutting down");
    incoming_.push_back(std::move(job));
    ++stats_.queued;
  }
  cv_.notify_one();
  return {};
}

void EngineWorker::forget_session(const std::string& session_id) {
  {
    std::lock_guard lock(mu_);
    forget_.push_back(session_id);
  }
  cv_.notify_one();
}

void EngineWorker::request_stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mu_);
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
  {
    std::lock_guard lock(load_mu_);
    load_stop_ = true;
  }
  load_cv_.notify_all();
  if (loader_.joinable()) loader_.join();
}

WorkerStats EngineWorker::stats() const {
  std::lock_guard lock(mu_);
  // Rates over windows of at least a second, rolled by whoever asks (an idle engine publishes
  // nothing, and its clients' rates fall to 0 at the next roll).
  const auto now = Clock::now();
  const double dt = std::chrono::duration<double>(now - rate_start_).count();
  if (dt >= 1.0) {
    auto base_of = [&](const std::string& id) {
      auto it = rate_base_.find(id);
      return it == rate_base_.end() ? std::pair<std::uint64_t, double>{0, 0} : it->second;
    };
    double total = 0;
    for (const auto& c : stats_.clients) total += c.view.service - base_of(c.view.client).second;
    std::map<std::string, std::pair<std::uint64_t, double>> base;
    rates_.clear();
    for (const auto& c : stats_.clients) {
      const auto b = base_of(c.view.client);
      rates_[c.view.client] = {static_cast<double>(c.view.output_tokens - std::min(b.first, c.view.output_tokens)) / dt,
                               total > 0 ? (c.view.service - b.second) / total : 0.0};
      base[c.view.client] = {c.view.output_tokens, c.view.service};
    }
    rate_base_ = std::move(base);
    rate_start_ = now;
  }
  WorkerStats out = stats_;
  for (auto& c : out.clients) {
    if (auto r = rates_.find(c.view.client); r != rates_.end()) {
      c.tokens_per_s = r->second.first;
      c.share = r->second.second;
    }
  }
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
    std::size_t resident = 0;
    if (options_.keep_resident && !job.session_id.empty()) {
      for (const Slot& slot : slots_) {
        if (slot.session_id == job.session_id) resident = std::max(resident, common_prefix(slot.cached, job.history));
      }
    }
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
  for (const Slot& slot : slots_) in.free_slots += slot.job ? 0 : 1;
  const scheduler::SlotPlan plan = sched_.schedule_slots(in);
  for (std::uint64_t id : plan.preempt) {
    for (const auto& [seq, r] : running_) {
      if (r.job.id == id) {
        park(seq);
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
  if (evict_one_idle()) return;
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
    park(newest);
  } else {
    runner_.cancel(newest, engine::FinishReason::context_full);
  }
}

void EngineWorker::publish_stats() {
  std::vector<SlotView> views;
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    views.push_back({s, slots_[s].session_id, static_cast<std::uint32_t>(ctx_.seq_pos_max(static_cast<engine::SeqId>(s)) + 1),
                     slots_[s].job.has_value()});
  }
  std::vector<ClientStats> clients;
  for (auto& c : sched_.clients()) clients.push_back({std::move(c), 0.0, 0.0});
  std::lock_guard lock(mu_);
  stats_.slots = std::move(views);
  stats_.clients = std::move(clients);
  stats_.running = running_.size() + restoring_.size();
  stats_.queued = waiting_.size() + incoming_.size();
  stats_.preemptions = preemptions_;
  stats_.policy = std::string(scheduler::policy_name(options_.scheduling.policy));
}

void EngineWorker::run() {
  while (true) {
    bool stopping = false;
    bool past_deadline = false;
    std::vector<std::string> forget;
    std::deque<Job> incoming;
    {
      std::unique_lock lock(mu_);
      auto woken = [&] { return stopping_ || !incoming_.empty() || !forget_.empty() || !loaded_.empty(); };
      if (waiting_.empty() && running_.empty() && restoring_.empty() && !woken()) {
        cv_.wait(lock, woken);
      } else if (running_.empty() && loaded_.empty() && !restoring_.empty()) {
        // Only swap-ins in progress: wait for one (or for anything new).
        cv_.wait(lock, woken);
      }
      incoming.swap(incoming_);
      forget.swap(forget_);
      stopping = stopping_;
      past_deadline = stopping_ && Clock::now() >= stop_deadline_;
    }
    take_incoming(incoming);
    for (const auto& id : forget) {
      for (std::uint32_t s = 0; s < slots_.size(); ++s) {
        if (slots_[s].session_id == id && !slots_[s].job) {
          ctx_.seq_clear(static_cast<engine::SeqId>(s));
          slots_[s].cached.clear();
          slots_[s].session_id.clear();
        }
      }
    }
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
      std::lock_guard lock(mu_);
      if (incoming_.empty()) return;
    }
  }
}

}  // namespace llmd::core
