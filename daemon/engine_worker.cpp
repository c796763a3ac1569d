// The engine thread (see engine_worker.h).
#include "daemon/engine_worker.h"

#include <pthread.h>

#include <algorithm>

#include <spdlog/spdlog.h>

namespace llmd::daemon {
namespace {

double ms(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1000.0; }
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::size_t common_prefix(const std::vector<engine::Token>& a, const std::vector<engine::Token>& b) {
  const std::size_t n = std::min(a.size(), b.size());
  std::size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

EngineWorker::EngineWorker(engine::Context& ctx, const engine::Tokenizer& tokenizer, WorkerOptions options)
    : ctx_(ctx), tok_(tokenizer), options_(options), runner_(ctx, tokenizer), slots_(ctx.n_slots()) {
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
  return stats_;
}

void EngineWorker::fail(Job& job, Error error, engine::FinishReason finish) {
  JobResult r;
  r.finish = finish;
  r.error = std::move(error);
  r.timings.queue = ms_between(job.submitted, Clock::now());
  if (job.on_done) job.on_done(std::move(r));
}

std::uint32_t EngineWorker::cells_used() const {
  std::uint32_t n = 0;
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    n += static_cast<std::uint32_t>(ctx_.seq_pos_max(static_cast<engine::SeqId>(s)) + 1);
  }
  return n;
}

// Drops the KV of the least recently used idle slot that holds any; false if there is none.
bool EngineWorker::evict_one_idle() {
  std::optional<std::size_t> victim;
  for (std::size_t s = 0; s < slots_.size(); ++s) {
    const Slot& slot = slots_[s];
    if (slot.job || ctx_.seq_pos_max(static_cast<engine::SeqId>(s)) < 0) continue;
    if (!victim || slot.last_used < slots_[*victim].last_used) victim = s;
  }
  if (!victim) return false;
  ctx_.seq_clear(static_cast<engine::SeqId>(*victim));
  slots_[*victim].cached.clear();
  slots_[*victim].session_id.clear();
  return true;
}

bool EngineWorker::make_room(std::size_t cells_needed) {
  while (ctx_.n_ctx() - cells_used() < cells_needed) {
    if (!evict_one_idle()) return false;
  }
  return true;
}

std::optional<engine::SeqId> EngineWorker::pick_slot(const Job& job) {
  std::optional<engine::SeqId> best;
  auto consider = [&](std::uint32_t s) {
    if (!best || slots_[s].last_used < slots_[static_cast<std::size_t>(*best)].last_used) {
      best = static_cast<engine::SeqId>(s);
    }
  };
  // 1. the session's own slot; 2. an empty slot; 3. the least recently used idle slot.
  if (!job.session_id.empty()) {
    for (std::uint32_t s = 0; s < slots_.size(); ++s) {
      if (!slots_[s].job && slots_[s].session_id == job.session_id) return static_cast<engine::SeqId>(s);
    }
  }
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    if (!slots_[s].job && slots_[s].session_id.empty() && slots_[s].cached.empty()) return static_cast<engine::SeqId>(s);
  }
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    if (!slots_[s].job) consider(s);
  }
  return best;
}

bool EngineWorker::try_admit(Job& job) {
  const std::size_t total = job.history.size() + job.input.size();
  if (total >= ctx_.max_seq_len()) {
    fail(job,
         Error(Errc::invalid_argument, "the prompt needs " + std::to_string(total) + " tokens; a sequence holds " +
                                           std::to_string(ctx_.max_seq_len())),
         engine::FinishReason::error);
    return true;
  }
  auto picked = pick_slot(job);
  if (!picked) return false;
  const engine::SeqId seq = *picked;
  Slot& slot = slots_[static_cast<std::size_t>(seq)];

  std::size_t reuse = 0;
  if (options_.keep_resident && !job.session_id.empty() && slot.session_id == job.session_id) {
    reuse = common_prefix(slot.cached, job.history);
  }
  if (reuse < slot.cached.size()) {
    if (reuse == 0 || !ctx_.seq_truncate(seq, static_cast<engine::Pos>(reuse))) {
      ctx_.seq_clear(seq);
      reuse = 0;
    }
    slot.cached.resize(reuse);
  }
  // Cells for the prompt; generation may need more, handled when a step finds the pool full.
  if (!make_room(total - reuse)) {
    if (!running_.empty() || !restoring_.empty()) return false;  // wait for running jobs to free cells
  }

  Running run{};
  run.admitted = Clock::now();
  kvstore::ChunkStore* chunks = job.session_id.empty() ? nullptr : options_.chunks;
  slot.session_id = job.session_id;
  slot.job = job.id;
  slot.last_used = Clock::now();
  if (chunks) {
    chunks->pin(job.session_id);
    if (reuse == 0 && !job.history.empty()) {
      // Swap-in: the loader thread builds the state from chunks while the engine keeps decoding
      // the other sequences; the slot stays reserved (busy) meanwhile.
      ctx_.seq_clear(seq);
      const kvstore::RestoreTarget target{seq, ctx_.n_stream(), ctx_.stream_of(seq)};
      run.job = std::move(job);
      const Job& queued = restoring_.emplace(seq, std::move(run)).first->second.job;
      {
        std::lock_guard lock(load_mu_);
        load_queue_.push_back({seq, queued.session_id, queued.history, target});
      }
      load_cv_.notify_one();
      return true;
    }
  }
  run.job = std::move(job);
  start(seq, std::move(run), reuse);
  return true;
}

void EngineWorker::start(engine::SeqId seq, Running run, std::size_t reuse) {
  Slot& slot = slots_[static_cast<std::size_t>(seq)];
  Job& job = run.job;
  std::vector<engine::Token> prompt(job.history.begin() + static_cast<std::ptrdiff_t>(reuse), job.history.end());
  prompt.insert(prompt.end(), job.input.begin(), job.input.end());
  // A resident session lacks exactly one history token: the last one it generated, sampled but
  // never decoded. That is this turn's own work, not a restore.
  std::size_t restore = job.history.size() - reuse;
  if (reuse > 0 && restore == 1) restore = 0;
  engine::SequenceJob sj{seq, std::move(prompt), job.params, restore};
  if (auto st = runner_.add(std::move(sj)); !st) {
    release_slot(seq, job);
    fail(job, st.error(), engine::FinishReason::error);
    return;
  }
  slot.last_used = Clock::now();
  run.reused = run.loaded > 0 ? 0 : reuse;
  run.restored = restore;
  running_.emplace(seq, std::move(run));
}

void EngineWorker::release_slot(engine::SeqId seq, const Job& job) {
  Slot& slot = slots_[static_cast<std::size_t>(seq)];
  slot.job.reset();
  if (options_.chunks && !job.session_id.empty()) options_.chunks->unpin(job.session_id);
}

void EngineWorker::load_loop() {
  while (true) {
    LoadTask task;
    {
      std::unique_lock lock(load_mu_);
      load_cv_.wait(lock, [&] { return load_stop_ || (!load_queue_.empty() && !load_buf_busy_); });
      if (load_stop_) return;
      task = std::move(load_queue_.front());
      load_queue_.pop_front();
      load_buf_busy_ = true;  // until the engine has installed the state
    }
    auto result = options_.chunks->load(task.session_id, task.history, task.target, load_buf_);
    {
      std::lock_guard lock(mu_);
      loaded_.emplace_back(task.seq, result);
    }
    cv_.notify_one();
  }
}

void EngineWorker::finish_restores() {
  std::vector<std::pair<engine::SeqId, kvstore::LoadResult>> done;
  {
    std::lock_guard lock(mu_);
    done.swap(loaded_);
  }
  for (auto& [seq, loaded] : done) {
    auto it = restoring_.find(seq);
    if (it == restoring_.end()) continue;
    Running run = std::move(it->second);
    restoring_.erase(it);
    run.read_ms = loaded.read_ms;
    run.decode_ms = loaded.decode_ms;
    if (loaded.tokens > 0 && !run.job.cancelled->load()) {
      const auto t = Clock::now();
      if (auto st = ctx_.seq_state_set_built(seq, std::span(load_buf_.data(), loaded.state_bytes)); !st) {
        spdlog::warn("engine: restoring {} from KV chunks failed ({}); recomputing it", run.job.session_id,
                     st.error().message());
        ctx_.seq_clear(seq);
      } else {
        run.loaded = loaded.tokens;
      }
      const double install_ms = ms_between(t, Clock::now());
      run.decode_ms += install_ms;
      spdlog::debug("engine: {} restored {} tokens from KV chunks ({} from RAM, {} from disk): read {:.2f} ms, "
                    "decode {:.2f} ms, install {:.2f} ms",
                    run.job.session_id, run.loaded, loaded.from_ram, loaded.from_disk, loaded.read_ms,
                    loaded.decode_ms, install_ms);
    }
    {
      std::lock_guard lock(load_mu_);
      load_buf_busy_ = false;
    }
    load_cv_.notify_one();
    if (run.job.cancelled->load()) {
      release_slot(seq, run.job);
      ctx_.seq_clear(seq);
      fail(run.job, Error(Errc::cancelled, "cancelled while its session was being restored"),
           engine::FinishReason::cancelled);
      continue;
    }
    slots_[static_cast<std::size_t>(seq)].cached.assign(run.job.history.begin(),
                                                        run.job.history.begin() + static_cast<std::ptrdiff_t>(run.loaded));
    const std::size_t reuse = run.loaded;
    start(seq, std::move(run), reuse);
  }
}

void EngineWorker::write_back(engine::SeqId seq, const std::string& session_id) {
  auto state = ctx_.seq_state_get(seq);
  if (!state) {
    spdlog::warn("engine: cannot read the KV of {} for write-back: {}", session_id, state.error().message());
    return;
  }
  options_.chunks->write_back(session_id, slots_[static_cast<std::size_t>(seq)].cached, std::move(*state),
                              ctx_.attention_importance(seq));
}

void EngineWorker::complete(engine::SeqId seq, engine::SequenceOutcome o) {
  auto it = running_.find(seq);
  if (it == running_.end()) return;
  Running r = std::move(it->second);
  running_.erase(it);
  Slot& slot = slots_[static_cast<std::size_t>(seq)];

  // What the KV now holds: history + input + generated, as far as it was decoded.
  std::vector<engine::Token> all = std::move(r.job.history);
  all.insert(all.end(), r.job.input.begin(), r.job.input.end());
  all.insert(all.end(), o.tokens.begin(), o.tokens.end());
  all.resize(std::min(all.size(), static_cast<std::size_t>(ctx_.seq_pos_max(seq) + 1)));
  slot.cached = std::move(all);
  slot.job.reset();
  slot.last_used = Clock::now();
  if (options_.chunks && !r.job.session_id.empty()) {
    if (r.restored > 0) options_.chunks->report_recompute(r.restored, ms(o.restore_time));
    // Ahead-of-time write-back: a later eviction of this slot only drops memory.
    if (o.finish != engine::FinishReason::error && !slot.cached.empty()) write_back(seq, r.job.session_id);
    options_.chunks->unpin(r.job.session_id);
  }
  if (r.job.session_id.empty() || !options_.keep_resident) {
    // One-off work and the no-residency baseline keep nothing for later.
    ctx_.seq_clear(seq);
    slot.cached.clear();
    slot.session_id.clear();
  }

  JobResult res;
  res.finish = o.finish;
  res.generated = std::move(o.tokens);
  res.text = std::move(o.text);
  res.seed = o.seed;
  res.usage.prompt_tokens = static_cast<std::int32_t>(r.job.input.size());
  res.usage.completion_tokens = static_cast<std::int32_t>(res.generated.size());
  res.usage.cached_tokens = static_cast<std::int32_t>(r.reused);
  res.usage.restored_tokens = static_cast<std::int32_t>(r.restored);
  res.usage.loaded_tokens = static_cast<std::int32_t>(r.loaded);
  res.timings.queue = ms_between(r.job.submitted, r.admitted);
  res.timings.restore_read = r.read_ms;
  res.timings.restore_decode = r.decode_ms;
  res.timings.restore_recompute = ms(o.restore_time);
  res.timings.restore = r.read_ms + r.decode_ms + ms(o.restore_time);
  res.timings.prefill = ms(o.prefill_time);
  res.timings.decode = ms(o.decode_time);
  res.timings.ttft = res.timings.queue + res.timings.restore + res.timings.prefill;
  if (res.finish == engine::FinishReason::error) res.error = Error(Errc::internal, "decoding failed");
  {
    std::lock_guard lock(mu_);
    ++stats_.jobs_done;
    stats_.tokens_generated += res.generated.size();
  }
  publish_stats();  // before the callback: whoever hears of the result sees the slot free
  if (r.job.on_done) r.job.on_done(std::move(res));
}

void EngineWorker::publish_stats() {
  std::vector<SlotView> views;
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    views.push_back({s, slots_[s].session_id, static_cast<std::uint32_t>(ctx_.seq_pos_max(static_cast<engine::SeqId>(s)) + 1),
                     slots_[s].job.has_value()});
  }
  std::lock_guard lock(mu_);
  stats_.slots = std::move(views);
  stats_.running = running_.size();
  stats_.queued = pending_.size() + incoming_.size();
}

void EngineWorker::run() {
  while (true) {
    bool stopping = false;
    bool past_deadline = false;
    std::vector<std::string> forget;
    {
      std::unique_lock lock(mu_);
      if (incoming_.empty() && forget_.empty() && pending_.empty() && running_.empty() && loaded_.empty() &&
          !stopping_) {
        cv_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !forget_.empty() || !loaded_.empty(); });
      } else if (running_.empty() && loaded_.empty() && !restoring_.empty()) {
        // Only swap-ins in progress: wait for one (or for anything new).
        cv_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !forget_.empty() || !loaded_.empty(); });
      }
      while (!incoming_.empty()) {
        pending_.push_back(std::move(incoming_.front()));
        incoming_.pop_front();
      }
      forget.swap(forget_);
      stopping = stopping_;
      past_deadline = stopping_ && Clock::now() >= stop_deadline_;
    }
    for (const auto& id : forget) {
      for (std::uint32_t s = 0; s < slots_.size(); ++s) {
        if (slots_[s].session_id == id && !slots_[s].job) {
          ctx_.seq_clear(static_cast<engine::SeqId>(s));
          slots_[s].cached.clear();
          slots_[s].session_id.clear();
        }
      }
    }
    if (stopping) {
      while (!pending_.empty()) {
        fail(pending_.front(), Error(Errc::cancelled, "the daemon is shutting down"), engine::FinishReason::cancelled);
        pending_.pop_front();
      }
      if (past_deadline) {
        for (auto& [seq, r] : running_) r.job.cancelled->store(true);
      }
    }
    finish_restores();
    // Cancellation requested by clients (or the shutdown deadline).
    for (auto& [seq, r] : running_) {
      if (r.job.cancelled->load()) runner_.cancel(seq);
    }
    // Admission, first come first served.
    while (!pending_.empty()) {
      Job& head = pending_.front();
      if (head.cancelled && head.cancelled->load()) {
        fail(head, Error(Errc::cancelled, "cancelled while queued"), engine::FinishReason::cancelled);
        pending_.pop_front();
        continue;
      }
      if (!try_admit(head)) break;
      pending_.pop_front();
    }
    if (!runner_.empty()) {
      auto more = runner_.step();
      if (!more) {
        if (more.error().code() == Errc::resource_exhausted) {
          // The pool is full: drop an idle slot's KV; if there is none, the newest job gives way.
          if (!evict_one_idle()) {
            engine::SeqId newest = -1;
            Clock::time_point newest_t{};
            for (auto& [seq, r] : running_) {
              if (newest < 0 || r.admitted > newest_t) {
                newest = seq;
                newest_t = r.admitted;
              }
            }
            if (newest >= 0) runner_.cancel(newest, engine::FinishReason::context_full);
          }
        } else {
          for (auto& [seq, r] : running_) runner_.cancel(seq, engine::FinishReason::error);
        }
      }
    }
    for (engine::SeqId seq : runner_.take_finished()) {
      auto o = runner_.take_outcome(seq);
      if (o) complete(seq, std::move(*o));
    }
    publish_stats();
    if (stopping && pending_.empty() && running_.empty() && restoring_.empty()) {
      std::lock_guard lock(mu_);
      if (incoming_.empty()) return;
    }
  }
}

}  // namespace llmd::daemon
