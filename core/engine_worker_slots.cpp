// The engine thread's slots (see engine_worker.h): placing a job in a slot (reusing what the slot
// holds, swapping the rest in from KV chunks or recomputing it), preemption, swap-in on the loader
// thread, write-back, completion.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/chat_turns.h"
#include "core/engine_worker.h"

namespace llmd::core {
namespace {

double ms(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1000.0; }
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

std::size_t EngineWorker::common_prefix(const std::vector<engine::Token>& a, const std::vector<engine::Token>& b) {
  const std::size_t n = std::min(a.size(), b.size());
  std::size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
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

// Cells a job's sequence will surely need once placed: what its slot must hold plus the prompt
// still to decode.
std::size_t EngineWorker::footprint(const Running& run) {
  return needed(run).size() + (run.suspended ? run.suspended->prompt_left() : run.job.input.size());
}

// Room for a few generated tokens beyond the footprint, so that a job admitted into a nearly full
// pool does not have to give way again at its first step.
std::size_t EngineWorker::headroom(const Running& run) {
  const std::size_t generated = run.suspended ? run.suspended->generated().size() : 0;
  const auto max_tokens = static_cast<std::size_t>(std::max(run.job.params.max_tokens, 1));
  return std::min<std::size_t>(kGenerationHeadroom, max_tokens > generated ? max_tokens - generated : 1);
}

// Cells promised to the jobs in slots: what running jobs hold and still have to prefill, plus
// their headroom, and the footprint of jobs being swapped in.
std::size_t EngineWorker::committed_cells() const {
  std::size_t n = 0;
  for (const auto& [seq, r] : running_) {
    n += static_cast<std::size_t>(ctx_.seq_pos_max(seq) + 1) + runner_.prompt_left(seq) + headroom(r);
  }
  for (const auto& [seq, r] : restoring_) n += footprint(r) + headroom(r);
  return n;
}

EngineWorker::Placed EngineWorker::place(Running& run) {
  Job& job = run.job;
  const std::vector<engine::Token>& need = needed(run);
  const std::size_t total = footprint(run);
  // A turn needs a cell for what it generates; an audit only recomputes (up to a full sequence).
  if (!run.suspended) {
    const SeqUse use = job.audit_of.empty() ? SeqUse::turn : SeqUse::audit;
    if (auto fits = check_context(need.size(), total - need.size(), ctx_.max_seq_len(), use); !fits) {
      fail(job, fits.error(), engine::FinishReason::error);
      return Placed::failed;
    }
  }
  // Admission by cells: a job starts only when its footprint (and a little headroom) fits beside
  // what the jobs in slots are promised. Alone, it always starts (a sequence never exceeds the
  // pool). So a job parked because the pool was full waits until cells are free instead of
  // being admitted again at once, and the oldest running job always advances (see step()).
  const bool alone = running_.empty() && restoring_.empty();
  if (!alone && committed_cells() + total + headroom(run) > ctx_.n_ctx()) return Placed::no_room;
  auto picked = pick_slot(job);
  if (!picked) return Placed::no_room;
  if (!job.audit_of.empty() && !run.audit) capture_resident(run);
  const engine::SeqId seq = *picked;
  Slot& slot = slots_[static_cast<std::size_t>(seq)];
  // Reserved from here on: nothing may evict the slot whose KV this job is about to reuse.
  slot.job = job.id;

  std::size_t reuse = 0;
  if (options_.keep_resident && !job.session_id.empty() && slot.session_id == job.session_id) {
    reuse = common_prefix(slot.cached, need);
  }
  if (reuse < slot.cached.size()) {
    if (reuse == 0 || !ctx_.seq_truncate(seq, static_cast<engine::Pos>(reuse))) {
      ctx_.seq_clear(seq);
      reuse = 0;
    }
    slot.cached.resize(reuse);
  }
  if (reuse == 0) slot.session_id.clear();  // whatever it held is gone
  // Cells for the prompt; generation may need more, handled when a step finds the pool full.
  if (!make_room(total - reuse) && !alone) {
    slot.job.reset();
    return Placed::no_room;  // running jobs will free cells
  }

  if (!run.admitted) run.admitted = Clock::now();
  kvstore::ChunkStore* chunks = job.session_id.empty() ? nullptr : options_.chunks;
  slot.session_id = job.session_id;
  slot.last_used = Clock::now();
  if (chunks) {
    chunks->pin(job.session_id);
    if (reuse == 0 && !need.empty()) {
      // Swap-in: the loader thread builds the state from chunks while the engine keeps decoding
      // the other sequences; the slot stays reserved (busy) meanwhile.
      ctx_.seq_clear(seq);
      const kvstore::RestoreTarget target{seq, ctx_.n_stream(), ctx_.stream_of(seq)};
      Running& queued = restoring_.emplace(seq, std::move(run)).first->second;
      {
        std::lock_guard lock(load_mu_);
        load_queue_.push_back({seq, queued.job.session_id, needed(queued), target});
      }
      load_cv_.notify_one();
      return Placed::restoring;
    }
  }
  start(seq, std::move(run), reuse);
  return Placed::started;
}

// An audit job records the audited session's slot before anything (the audit's own scratch slot
// included) can take it.
void EngineWorker::capture_resident(Running& run) {
  AuditCapture cap;
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    const Slot& slot = slots_[s];
    if (slot.job || slot.session_id != run.job.audit_of) continue;
    auto state = ctx_.seq_state_get(static_cast<engine::SeqId>(s));
    if (!state) {
      spdlog::warn("engine: audit of {}: cannot read slot {}: {}", run.job.audit_of, s, state.error().message());
      break;
    }
    cap.resident = true;
    cap.slot = s;
    cap.resident_tokens = slot.cached;
    cap.resident_state = std::move(*state);
    break;
  }
  run.audit = std::move(cap);
}

// A slot's KV is not what the engine's bookkeeping says: never decode on it. The slot is
// cleared (nothing of it is written back), the job fails loudly, the failure is counted.
void EngineWorker::kv_check_failed(engine::SeqId seq, Job& job, const Error& why) {
  spdlog::error("engine: KV check failed on slot {} for job {} ({}): {}; the slot is cleared and the job fails",
                seq, job.id, job.session_id.empty() ? job.client : job.session_id, why.message());
  {
    std::lock_guard lock(mu_);
    ++stats_.kv_check_failures;
  }
  Slot& slot = slots_[static_cast<std::size_t>(seq)];
  ctx_.seq_clear(seq);
  slot.cached.clear();
  slot.session_id.clear();
  release_slot(seq, job);
  fail(job, Error(Errc::internal, "the KV check failed: " + why.message()), engine::FinishReason::error);
}

void EngineWorker::start(engine::SeqId seq, Running run, std::size_t reuse) {
  Slot& slot = slots_[static_cast<std::size_t>(seq)];
  Job& job = run.job;
  // The slot must hold exactly the first `reuse` tokens of what the job needs (checked here and,
  // by position, by the runner).
  const std::vector<engine::Token>& need = needed(run);
  if (slot.cached.size() != reuse || reuse > need.size() ||
      !std::equal(slot.cached.begin(), slot.cached.end(), need.begin())) {
    return kv_check_failed(seq, job,
                           Error(Errc::internal, "the slot's tokens are not the " + std::to_string(reuse) +
                                                     " tokens the job reuses"));
  }
  if (run.suspended) {
    // A parked job continues: what its slot lacks is replayed, then it goes on exactly.
    std::vector<engine::Token> replay(run.kv_tokens.begin() + static_cast<std::ptrdiff_t>(reuse), run.kv_tokens.end());
    const std::size_t replayed = replay.size();
    auto st = runner_.resume(seq, std::move(*run.suspended), std::move(replay));
    run.suspended.reset();
    run.kv_tokens.clear();
    if (!st) return kv_check_failed(seq, job, st.error());
    run.replayed += replayed;
    sched_.charge_swap(job.id, static_cast<std::uint32_t>(run.loaded));
    slot.last_used = Clock::now();
    run.steps = 0;
    running_.emplace(seq, std::move(run));
    return;
  }
  std::vector<engine::Token> prompt(job.history.begin() + static_cast<std::ptrdiff_t>(reuse), job.history.end());
  prompt.insert(prompt.end(), job.input.begin(), job.input.end());
  // A resident session lacks exactly one history token: the last one it generated, sampled but
  // never decoded. That is this turn's own work, not a restore.
  std::size_t restore = job.history.size() - reuse;
  if (reuse > 0 && restore == 1) restore = 0;
  engine::SequenceJob sj{seq, std::move(prompt), job.params, restore, static_cast<engine::Pos>(reuse)};
  if (auto st = runner_.add(std::move(sj)); !st) {
    if (st.error().code() == Errc::internal) return kv_check_failed(seq, job, st.error());
    release_slot(seq, job);
    fail(job, st.error(), engine::FinishReason::error);
    return;
  }
  sched_.charge_swap(job.id, static_cast<std::uint32_t>(run.loaded));
  slot.last_used = Clock::now();
  run.reused = run.loaded > 0 ? 0 : reuse;
  run.restored = restore;
  running_.emplace(seq, std::move(run));
}

void EngineWorker::park(engine::SeqId seq) {
  auto it = running_.find(seq);
  if (it == running_.end()) return;
  auto suspended = runner_.suspend(seq);
  if (!suspended) return;  // it has just finished: nothing to park
  Running run = std::move(it->second);
  running_.erase(it);
  Slot& slot = slots_[static_cast<std::size_t>(seq)];
  const Job& job = run.job;

  // What the KV holds: the history before the job's first position, then what it decoded.
  run.kv_tokens.assign(job.history.begin(), job.history.begin() + suspended->first_pos());
  run.kv_tokens.insert(run.kv_tokens.end(), suspended->decoded().begin(), suspended->decoded().end());
  const std::uint32_t prompt_left = suspended->prompt_left();
  run.suspended = std::move(suspended);
  slot.cached.assign(run.kv_tokens.begin(),
                     run.kv_tokens.begin() + std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(run.kv_tokens.size()),
                                                                        ctx_.seq_pos_max(seq) + 1));
  slot.job.reset();
  slot.last_used = Clock::now();
  if (options_.chunks && !job.session_id.empty()) {
    // Saved like any session's KV: the slot may be taken, the job comes back from chunks.
    if (!slot.cached.empty()) write_back(seq, job.session_id);
    options_.chunks->unpin(job.session_id);
  }
  if (job.session_id.empty() || !options_.keep_resident) {
    ctx_.seq_clear(seq);
    slot.cached.clear();
    slot.session_id.clear();
  }
  ++preemptions_;
  spdlog::debug("engine: job {} of {} preempted after {} generated tokens ({} KV tokens)", job.id, job.client,
                run.suspended->generated().size(), run.kv_tokens.size());
  sched_.requeue(job.id, prompt_left, static_cast<std::uint32_t>(run.kv_tokens.size()));
  const std::uint64_t id = job.id;
  waiting_.emplace(id, std::move(run));
}

void EngineWorker::release_slot(engine::SeqId seq, const Job& job) {
  Slot& slot = slots_[static_cast<std::size_t>(seq)];
  slot.job.reset();
  sched_.remove(job.id);
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
    run.read_ms += loaded.read_ms;
    run.decode_ms += loaded.decode_ms;
    std::size_t got = 0;
    if (loaded.tokens > 0 && !run.job.cancelled->load()) {
      const auto t = Clock::now();
      (void)make_room(loaded.tokens);  // running jobs may have taken the cells meanwhile
      if (auto st = ctx_.seq_state_set_built(seq, std::span(load_buf_.data(), loaded.state_bytes)); !st) {
        spdlog::warn("engine: restoring {} from KV chunks failed ({}); recomputing it", run.job.session_id,
                     st.error().message());
        ctx_.seq_clear(seq);
      } else {
        got = loaded.tokens;
      }
      const double install_ms = ms_between(t, Clock::now());
      run.decode_ms += install_ms;
      spdlog::debug("engine: {} restored {} tokens from KV chunks ({} from RAM, {} from disk): read {:.2f} ms, "
                    "decode {:.2f} ms, install {:.2f} ms",
                    run.job.session_id, got, loaded.from_ram, loaded.from_disk, loaded.read_ms, loaded.decode_ms,
                    install_ms);
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
    const std::vector<engine::Token>& need = needed(run);
    slots_[static_cast<std::size_t>(seq)].cached.assign(need.begin(), need.begin() + static_cast<std::ptrdiff_t>(got));
    run.loaded = got;
    start(seq, std::move(run), got);
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
  sched_.remove(r.job.id);
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
  std::optional<AuditCapture> audit = std::move(r.audit);
  if (audit) {
    if (auto state = ctx_.seq_state_get(seq)) audit->reference = std::move(*state);
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
  res.audit = std::move(audit);
  res.usage.prompt_tokens = static_cast<std::int32_t>(r.job.input.size());
  res.usage.completion_tokens = static_cast<std::int32_t>(res.generated.size());
  res.usage.cached_tokens = static_cast<std::int32_t>(r.reused);
  res.usage.restored_tokens = static_cast<std::int32_t>(r.restored + r.replayed);
  res.usage.loaded_tokens = static_cast<std::int32_t>(r.loaded);
  res.timings.queue = ms_between(r.job.submitted, r.admitted.value_or(r.job.submitted));
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

}  // namespace llmd::core
