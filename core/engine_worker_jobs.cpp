// A job's life in a slot, on the engine thread (see engine_worker.h): admission by cells and
// placing (the slot cache picks and reserves the slot; the job reuses what it holds, is swapped in
// from KV chunks by the loader or recomputes the rest), the KV check at start, preemption,
// completion and its result.
#include <algorithm>
#include <cstdio>
#include <random>
#include <tuple>

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

void EngineWorker::fail(Job& job, Error error, engine::FinishReason finish) {
  JobResult r;
  r.finish = finish;
  r.error = std::move(error);
  r.timings.queue = ms_between(job.submitted, Clock::now());
  if (job.on_done) job.on_done(std::move(r));
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
  const bool adopted = adopt_prefix(run);
  auto picked = slots_.pick(job.session_id);
  if (!picked) {
    if (adopted) unadopt(run);
    return Placed::no_room;
  }
  // An audit records the audited session's slot before anything (its own scratch slot included)
  // can take it.
  if (!job.audit_of.empty() && !run.audit) run.audit = slots_.capture(job.audit_of);
  const engine::SeqId seq = *picked;
  // A sliding window moves in the slot when it holds the session's KV from before the move.
  const bool sliding = job.slide && !run.suspended;
  if (sliding) (void)slots_.slide(seq, job.session_id, *job.slide, job.lineage);
  // Reserved from here on: nothing may evict the slot whose KV this job is about to reuse.
  const std::size_t reuse = slots_.reserve(seq, job.id, job.session_id, need, job.lineage);
  // Cells for the prompt; generation may need more, handled when a step finds the pool full.
  if (!slots_.make_room(total - reuse) && !alone) {
    slots_.unreserve(seq);
    if (adopted) unadopt(run);
    return Placed::no_room;  // running jobs will free cells
  }

  if (!run.admitted) run.admitted = Clock::now();
  std::optional<kvstore::KeyOwner> owner;
  if (job.uid && !job.session_id.empty()) owner = kvstore::KeyOwner{*job.uid, job.anonymous};
  slots_.occupy(seq, job.session_id, owner, job.lineage);
  if (run.share_from) {
    // The prompt's prefix is in a running job's slot: its cells are shared, not recomputed. The
    // source decoded exactly these tokens there (running_prefix); the runner checks the positions.
    const auto [from, n] = *run.share_from;
    run.share_from.reset();
    if (reuse == 0 && n <= need.size() && ctx_.seq_share_prefix(from, seq, static_cast<engine::Pos>(n))) {
      slots_.set_cached(seq, std::span(need.data(), n));
      {
        MutexLock lock(mu_);
        stats_.shared_prefix_tokens += n;
      }
      start(seq, std::move(run), n);
      return Placed::started;
    }
    slots_.drop_kv(seq);  // not shared after all: what the slot held was cut to nothing; compute it
  }
  if (options_.chunks && !job.session_id.empty() && reuse == 0 && !need.empty()) {
    // Swap-in: the loader thread builds the state from chunks while the engine keeps decoding
    // the other sequences; the slot stays reserved (busy) meanwhile. A sliding move not made in
    // the slot loads the KV from before it (if it fits a sequence) and slides it once installed.
    slots_.drop_kv(seq);
    const kvstore::RestoreTarget target{seq, ctx_.n_stream(), ctx_.stream_of(seq)};
    run.slide_load = sliding && job.slide->from.size() <= ctx_.max_seq_len() && ctx_.can_shift();
    Running& queued = restoring_.emplace(seq, std::move(run)).first->second;
    const Job& q = queued.job;
    if (queued.slide_load) {
      loader_->enqueue({seq, q.session_id, q.slide->from, target, q.uid, q.slide->from_lineage});
    } else {
      loader_->enqueue({seq, q.session_id, needed(queued), target, q.uid, q.lineage});
    }
    return Placed::restoring;
  }
  start(seq, std::move(run), reuse);
  return Placed::started;
}

bool EngineWorker::adopt_prefix(Running& run) {
  Job& job = run.job;
  if (!job.uid || run.suspended || !job.history.empty() || !job.audit_of.empty()) return false;
  if (!job.anonymous) {
    // A session's first turn (no history yet) may begin with what its uid holds in chunks: a
    // system prompt another of its sessions has, a stateless request's history. That part is
    // loaded like history; the session keeps its own key.
    if (!options_.chunks || job.session_id.empty() || job.input.size() < 2) return false;
    const std::size_t covered = options_.chunks->find_prefix(*job.uid, job.input).covered;
    const std::size_t m = std::min(covered, job.input.size() - 1);
    if (m == 0) return false;
    job.history.assign(job.input.begin(), job.input.begin() + static_cast<std::ptrdiff_t>(m));
    job.input.erase(job.input.begin(), job.input.begin() + static_cast<std::ptrdiff_t>(m));
    return true;
  }
  if (!job.session_id.empty()) return false;
  if (!options_.keep_resident && !options_.chunks) return false;
  const std::vector<engine::Token>& tokens = job.input;
  const kvstore::KeyOwner owner{*job.uid, true};
  const auto slot = slots_.best_anonymous(*job.uid, tokens);
  std::optional<kvstore::PrefixLookup> found;
  if (options_.chunks) found = options_.chunks->find_prefix(*job.uid, tokens);
  const auto running = running_prefix(*job.uid, tokens);
  std::string key;
  std::size_t covered = 0;
  if (running && running->second > (slot ? slot->tokens : 0) && running->second > (found ? found->covered : 0) &&
      std::min(running->second, tokens.size() - 1) > 0) {
    // A running request of the caller's holds more of it (the other choices of an n > 1
    // request, requests with the same long system prompt): its cells are shared at placing.
    covered = running->second;
    key = new_prefix_key(*job.uid);
    run.share_from = std::make_pair(running->first, std::min(covered, tokens.size() - 1));
  } else if (slot && (!found || slot->tokens >= found->covered)) {
    // Resident: the request extends the slot's entry (continue it), or leaves it somewhere (a
    // new entry starts from the slot's common prefix; the old one keeps its chunks).
    covered = slot->tokens;
    key = slot->whole ? slot->key : new_prefix_key(*job.uid);
    if (!slot->whole) slots_.rename(slot->seq, key, owner);
  } else if (found && found->covered > 0) {
    // In chunks: continue the entry it extends, if any; the load finds the uid's other keys' chunks.
    covered = found->covered;
    key = found->entry;
  }
  if (key.empty()) key = new_prefix_key(*job.uid);
  job.session_id = std::move(key);
  // What a cache may hold becomes history; at least one token stays the job's own input (the
  // runner needs a prompt to sample after).
  const std::size_t m = std::min(covered, tokens.size() - 1);
  job.history.assign(job.input.begin(), job.input.begin() + static_cast<std::ptrdiff_t>(m));
  job.input.erase(job.input.begin(), job.input.begin() + static_cast<std::ptrdiff_t>(m));
  return true;
}

std::optional<std::pair<engine::SeqId, std::size_t>> EngineWorker::running_prefix(
    std::uint32_t uid, const std::vector<engine::Token>& tokens) const {
  if (ctx_.n_stream() != 1) return std::nullopt;  // a share across streams would copy whole buffers
  std::optional<std::pair<engine::SeqId, std::size_t>> best;
  for (const auto& [seq, r] : running_) {
    const Job& j = r.job;
    if (!j.anonymous || j.uid != uid || j.lineage != 0 || j.slide || !j.audit_of.empty() || r.replayed != 0) continue;
    // The slot's KV holds (history + input)[0, held): what it held when started, then the prompt.
    const auto held = static_cast<std::size_t>(std::max<engine::Pos>(runner_.prompt_end(seq), 0));
    std::size_t n = 0;
    const std::size_t limit = std::min(held, tokens.size());
    for (; n < limit; ++n) {
      const engine::Token t = n < j.history.size() ? j.history[n] : j.input[n - j.history.size()];
      if (t != tokens[n]) break;
    }
    if (n > 0 && (!best || n > best->second)) best = std::make_pair(seq, n);
  }
  return best;
}

void EngineWorker::unadopt(Running& run) {
  Job& job = run.job;
  run.share_from.reset();
  job.input.insert(job.input.begin(), job.history.begin(), job.history.end());
  job.history.clear();
  if (job.anonymous) job.session_id.clear();
}

std::string EngineWorker::new_prefix_key(std::uint32_t uid) {
  if (prefix_keys_ == 0) {
    std::random_device rd;
    prefix_keys_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
                   static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "pfx_%u_%016llx", uid, static_cast<unsigned long long>(++prefix_keys_));
  return buf;
}

// A slot's KV is not what the engine's bookkeeping says: never decode on it. The slot is
// cleared (nothing of it is written back), the job fails loudly, the failure is counted.
void EngineWorker::kv_check_failed(engine::SeqId seq, Job& job, const Error& why) {
  spdlog::error("engine: KV check failed on slot {} for job {} ({}): {}; the slot is cleared and the job fails",
                seq, job.id, job.session_id.empty() ? job.client : job.session_id, why.message());
  {
    MutexLock lock(mu_);
    ++stats_.kv_check_failures;
  }
  slots_.clear(seq);
  release_slot(seq, job);
  fail(job, Error(Errc::internal, "the KV check failed: " + why.message()), engine::FinishReason::error);
}

void EngineWorker::start(engine::SeqId seq, Running run, std::size_t reuse) {
  Job& job = run.job;
  // The slot must hold exactly the first `reuse` tokens of what the job needs (checked here and,
  // by position, by the runner).
  const std::vector<engine::Token>& need = needed(run);
  const std::vector<engine::Token>& cached = slots_.cached(seq);
  if (cached.size() != reuse || reuse > need.size() || !std::equal(cached.begin(), cached.end(), need.begin())) {
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
    slots_.touch(seq);
    run.steps = 0;
    running_.emplace(seq, std::move(run));
    return;
  }
  std::vector<engine::Token> prompt(job.history.begin() + static_cast<std::ptrdiff_t>(reuse), job.history.end());
  prompt.insert(prompt.end(), job.input.begin(), job.input.end());
  // History that never had KV is this turn's own work, not a restore: the last token a session
  // generated (sampled, never decoded) and the template's closing of that answer (Job::history_new);
  // without that count, the lone token a resident session lacks.
  std::size_t restore = job.history.size() - reuse;
  if (job.history_new > 0) {
    restore = restore > job.history_new ? restore - job.history_new : 0;
  } else if (reuse > 0 && restore == 1) {
    restore = 0;
  }
  engine::SequenceJob sj{seq, std::move(prompt), job.params, restore, static_cast<engine::Pos>(reuse)};
  if (auto st = runner_.add(std::move(sj)); !st) {
    if (st.error().code() == Errc::internal) return kv_check_failed(seq, job, st.error());
    release_slot(seq, job);
    fail(job, st.error(), engine::FinishReason::error);
    return;
  }
  slots_.touch(seq);
  run.reused = run.loaded > 0 ? 0 : reuse;
  run.restored = restore;
  running_.emplace(seq, std::move(run));
}

void EngineWorker::park(engine::SeqId seq, bool preempted) {
  auto it = running_.find(seq);
  if (it == running_.end()) return;
  const auto t0 = Clock::now();
  auto suspended = runner_.suspend(seq);
  if (!suspended) return;  // it has just finished: nothing to park
  Running run = std::move(it->second);
  running_.erase(it);
  const Job& job = run.job;

  // What the KV holds: the history before the job's first position, then what it decoded.
  run.kv_tokens.assign(job.history.begin(), job.history.begin() + suspended->first_pos());
  run.kv_tokens.insert(run.kv_tokens.end(), suspended->decoded().begin(), suspended->decoded().end());
  const std::uint32_t prompt_left = suspended->prompt_left();
  run.suspended = std::move(suspended);
  // Its KV stays in the slot, an idle one among the spare slots, and the job resumes on it. It is
  // saved like any session's KV only when it would leave the slot (evicted, taken by another job):
  // then the job comes back from chunks.
  slots_.settle(seq, job.session_id, run.kv_tokens, /*save=*/true, /*defer=*/true);
  sched_.note_displaced(job.id, preempted);  // charged to its client
  spdlog::debug("engine: job {} of {} {} after {} generated tokens ({} KV tokens)", job.id, job.client,
                preempted ? "preempted" : "parked (the KV pool is full)", run.suspended->generated().size(),
                run.kv_tokens.size());
  sched_.requeue(job.id, prompt_left, static_cast<std::uint32_t>(run.kv_tokens.size()));
  const std::uint64_t id = job.id;
  waiting_.emplace(id, std::move(run));
  park_ms_ += ms_between(t0, Clock::now());
}

void EngineWorker::release_slot(engine::SeqId seq, const Job& job) {
  slots_.release(seq, job.session_id);
  sched_.remove(job.id);
}

// On the loader thread.
void EngineWorker::deliver(engine::SeqId seq, kvstore::LoadResult result) {
  {
    MutexLock lock(mu_);
    loaded_.emplace_back(seq, result);
  }
  cv_.notify_one();
}

void EngineWorker::finish_restores() {
  std::vector<std::pair<engine::SeqId, kvstore::LoadResult>> done;
  {
    MutexLock lock(mu_);
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
      if (auto st = slots_.install(seq, loader_->staged(loaded.state_bytes), loaded.tokens); !st) {
        spdlog::warn("engine: restoring {} from KV chunks failed ({}); recomputing it", run.job.session_id,
                     st.error().message());
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
    loader_->release();
    if (run.job.cancelled->load()) {
      release_slot(seq, run.job);
      slots_.drop_kv(seq);
      fail(run.job, Error(Errc::cancelled, "cancelled while its session was being restored"),
           engine::FinishReason::cancelled);
      continue;
    }
    const std::vector<engine::Token>& need = needed(run);
    if (run.slide_load) {
      // The KV from before the move: slid here. Too little of it (not past the head): what it
      // holds of the head stays (the head's KV is the same in every lineage: nothing before it
      // ever moves), the rest is recomputed.
      run.slide_load = false;
      const Slide& s = *run.job.slide;
      slots_.set_cached(seq, std::span(s.from.data(), got), s.from_lineage);
      if (auto held = slots_.slide(seq, run.job.session_id, s, run.job.lineage)) {
        got = *held;
      } else {
        got = std::min(got, s.head);
        if (got == 0 || !ctx_.seq_truncate(seq, static_cast<engine::Pos>(got))) {
          slots_.drop_kv(seq);
          got = 0;
        }
        slots_.set_cached(seq, std::span(need.data(), got), run.job.lineage);
      }
    } else {
      slots_.set_cached(seq, std::span(need.data(), got));
    }
    run.loaded = got;
    // Charged once, for this load: a job that resumes later on KV still resident loads nothing
    // (charging `loaded` at every start billed a preempted job's first load again at each resume).
    sched_.charge_swap(run.job.id, static_cast<std::uint32_t>(got));
    start(seq, std::move(run), got);
  }
}

void EngineWorker::complete(engine::SeqId seq, engine::SequenceOutcome o) {
  auto it = running_.find(seq);
  if (it == running_.end()) return;
  Running r = std::move(it->second);
  running_.erase(it);
  sched_.remove(r.job.id);

  // Usage as OpenAI defines it: every token the answer is conditioned on is a prompt token, and
  // the cached ones are those of them that were not computed for it (resident or loaded).
  const std::size_t prompt_total = r.job.history.size() + r.job.input.size();
  // What the KV now holds: history + input + generated, as far as it was decoded.
  std::vector<engine::Token> all = std::move(r.job.history);
  all.insert(all.end(), r.job.input.begin(), r.job.input.end());
  all.insert(all.end(), o.tokens.begin(), o.tokens.end());
  if (r.audit) {
    if (auto state = ctx_.seq_state_get(seq)) r.audit->reference = std::move(*state);
  }
  if (options_.chunks && !r.job.session_id.empty() && r.restored > 0) {
    options_.chunks->report_recompute(r.restored, ms(o.restore_time));
  }
  // Ahead-of-time write-back: a later eviction of this slot only drops memory.
  slots_.settle(seq, r.job.session_id, std::move(all), /*save=*/o.finish != engine::FinishReason::error);

  JobResult res;
  res.finish = o.finish;
  res.generated = std::move(o.tokens);
  res.text = std::move(o.text);
  res.logprobs = std::move(o.logprobs);
  res.seed = o.seed;
  res.audit = std::move(r.audit);
  res.usage.prompt_tokens = static_cast<std::int32_t>(prompt_total);
  res.usage.completion_tokens = static_cast<std::int32_t>(res.generated.size());
  res.usage.cached_tokens = static_cast<std::int32_t>(std::min(r.reused + r.loaded, prompt_total));
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
  if (res.finish == engine::FinishReason::error) {
    res.error = o.grammar_dead_end
                    ? Error(Errc::invalid_argument, "the answer cannot go on: this model's vocabulary has no token the "
                                                    "format allows next")
                          .with_param("response_format")
                    : Error(Errc::internal, "decoding failed");
  }
  {
    MutexLock lock(mu_);
    ++stats_.jobs_done;
    stats_.tokens_generated += res.generated.size();
    if (!res.error && res.finish != engine::FinishReason::cancelled && r.job.audit_of.empty()) {
      const auto now = Clock::now();
      latencies_.record(r.job.client, now, res.timings.ttft, ms_between(r.job.submitted, now));
    }
  }
  publish_stats();  // before the callback: whoever hears of the result sees the slot free
  if (r.job.on_done) r.job.on_done(std::move(res));
}

}  // namespace llmd::core
