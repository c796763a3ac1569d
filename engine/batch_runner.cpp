// Batched generation over one context (see batch_runner.h).
#include "engine/batch_runner.h"

#include <algorithm>
#include <limits>

namespace llmd::engine {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::microseconds since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0);
}

}  // namespace

Status BatchRunner::add(SequenceJob job) {
  if (!ctx_.valid_seq(job.seq)) return Error(Errc::invalid_argument, "no slot " + std::to_string(job.seq));
  if (active_.count(job.seq) != 0) return Error(Errc::invalid_argument, "slot " + std::to_string(job.seq) + " is busy");
  if (job.prompt.empty()) return Error(Errc::invalid_argument, "a job needs at least one prompt token");
  if (job.restore_tokens > job.prompt.size()) return Error(Errc::invalid_argument, "more restore tokens than prompt");
  for (Token t : job.prompt) {
    if (!tokenizer_.is_valid(t)) return Error(Errc::invalid_argument, "token " + std::to_string(t) + " is not in the vocabulary");
  }
  LLMD_TRY_STATUS(validate_generate(job.params));
  if (job.at >= 0) {
    const Pos lo = ctx_.seq_pos_min(job.seq), hi = ctx_.seq_pos_max(job.seq);
    const bool holds = job.at == 0 ? hi < 0 : (lo == 0 && hi == job.at - 1);
    if (!holds) {
      return Error(Errc::internal, "slot " + std::to_string(job.seq) + " holds positions " + std::to_string(lo) + ".." +
                                       std::to_string(hi) + " where the job expects 0.." + std::to_string(job.at - 1));
    }
  }
  auto sampler = Sampler::create(ctx_.model(), job.params.sampling);
  if (!sampler) return sampler.error();
  sampler->accept(job.prompt);

  const SeqId seq = job.seq;
  const Pos start = ctx_.seq_pos_max(seq) + 1;
  done_.erase(seq);
  TextStream stream(tokenizer_, job.params.stop, job.params.max_tokens, job.params.ignore_eog, job.params.shown_special);
  Active a{std::move(job), std::move(*sampler), std::move(stream), {}, start, start, {}, 0, 0, kNoToken, -1, {}, {}, {}};
  a.out.n_prompt = static_cast<int32_t>(a.job.prompt.size());
  a.out.seed = a.sampler.seed();
  active_.emplace(seq, std::move(a));
  return {};
}

void BatchRunner::finish(Active& a, FinishReason reason) {
  const auto now = Clock::now();
  if (!a.stream.done()) {
    auto d = a.stream.end(reason);
    if (!d.text.empty() && on_token_) on_token_(a.job.seq, kNoToken, d.text, nullptr);
  }
  a.out.text = a.stream.text();
  a.out.finish = a.stream.finish();
  if (a.first_token) {
    a.out.decode_time = since(*a.first_token, now);
  } else if (a.started) {
    const auto restored = a.restored.value_or(now);
    a.out.restore_time = since(*a.started, restored);
    a.out.prefill_time = since(restored, now);
  }
}

void BatchRunner::retire_finished() {
  for (auto it = active_.begin(); it != active_.end();) {
    if (it->second.stream.done()) {
      finished_.push_back(it->first);
      done_[it->first] = std::move(it->second.out);
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
}

Result<bool> BatchRunner::step(const StepLimits* limits) {
  if (active_.empty()) return false;
  Batch batch(static_cast<int32_t>(ctx_.n_batch()));
  const auto t0 = Clock::now();

  // What a failed decode must put back.
  struct Saved {
    Pos next_pos;
    std::size_t replay_done;
    std::size_t prompt_done;
    Token pending;
    bool had_started;
  };
  std::map<SeqId, Saved> saved;
  for (auto& [seq, a] : active_) {
    saved[seq] = {a.next_pos, a.replay_done, a.prompt_done, a.pending, a.started.has_value()};
  }

  // Decode tokens first: every generating sequence advances by one token per step.
  for (auto& [seq, a] : active_) {
    a.batch_index = -1;
    if (a.pending == kNoToken || a.replay_done < a.replay.size()) continue;
    if (limits != nullptr && std::find(limits->hold.begin(), limits->hold.end(), seq) != limits->hold.end()) continue;
    if (static_cast<uint32_t>(a.next_pos) >= ctx_.max_seq_len()) {
      finish(a, FinishReason::context_full);
      continue;
    }
    a.batch_index = batch.add(a.pending, a.next_pos++, seq, true);
    a.pending = kNoToken;
  }
  // Then prompt tokens (a resumed job's replay first): in slot order while there is room, or as
  // the limits say.
  auto take_prompt = [&](SeqId seq, Active& a, std::uint32_t max) {
    if (a.stream.done()) return;
    const Pos replay_base = a.next_pos - static_cast<Pos>(a.replay.size());
    std::uint32_t n = 0;
    while (a.replay_done < a.replay.size() && n < max && !batch.full()) {
      batch.add(a.replay[a.replay_done], replay_base + static_cast<Pos>(a.replay_done), seq, false);
      ++a.replay_done;
      ++n;
    }
    if (a.replay_done < a.replay.size() || a.prompt_done >= a.job.prompt.size()) return;
    if (!a.started) {
      a.started = t0;
      if (a.job.restore_tokens == 0) a.restored = t0;  // nothing to restore: all of it is prefill
    }
    while (a.prompt_done < a.job.prompt.size() && n < max && !batch.full()) {
      if (static_cast<uint32_t>(a.next_pos) >= ctx_.max_seq_len()) break;
      const bool last = a.prompt_done + 1 == a.job.prompt.size();
      const int32_t idx = batch.add(a.job.prompt[a.prompt_done++], a.next_pos++, seq, last);
      ++n;
      if (last) a.batch_index = idx;
    }
    if (a.prompt_done < a.job.prompt.size() && static_cast<uint32_t>(a.next_pos) >= ctx_.max_seq_len()) {
      finish(a, FinishReason::context_full);
    }
  };
  if (limits == nullptr) {
    for (auto& [seq, a] : active_) take_prompt(seq, a, std::numeric_limits<std::uint32_t>::max());
  } else {
    for (const auto& [seq, max] : limits->prefill) {
      auto it = active_.find(seq);
      if (it != active_.end()) take_prompt(seq, it->second, max);
    }
  }

  if (!batch.empty()) {
    if (auto st = ctx_.decode(batch); !st) {
      for (auto& [seq, a] : active_) {
        if (a.stream.done()) continue;
        const Saved& s = saved[seq];
        a.next_pos = s.next_pos;
        a.replay_done = s.replay_done;
        a.prompt_done = s.prompt_done;
        a.pending = s.pending;
        if (!s.had_started) a.started.reset();
      }
      retire_finished();
      return st.error();
    }
  }

  const auto t1 = Clock::now();
  for (auto& [seq, a] : active_) {
    if (!a.restored && a.prompt_done >= a.job.restore_tokens && a.started) a.restored = t1;
    if (a.stream.done() || a.batch_index < 0) continue;
    const bool want_logprobs = a.job.params.top_logprobs >= 0;
    TokenLogprob lp;
    const Token t = a.sampler.sample(ctx_, a.batch_index, want_logprobs ? &lp : nullptr, a.job.params.top_logprobs);
    if (t == kNoToken) {
      a.out.grammar_dead_end = true;
      finish(a, FinishReason::error);
      continue;
    }
    if (!a.first_token) {
      a.first_token = t1;
      if (a.started) {
        const auto restored = a.restored.value_or(t1);
        a.out.restore_time = since(*a.started, restored);
        a.out.prefill_time = since(restored, t1);
      }
    }
    a.out.tokens.push_back(t);
    if (want_logprobs) a.out.logprobs.push_back(lp);
    auto d = a.stream.push(t);
    if (on_token_) on_token_(seq, t, d.text, want_logprobs ? &a.out.logprobs.back() : nullptr);
    if (d.finish != FinishReason::none) {
      finish(a, d.finish);
    } else {
      a.pending = t;
    }
  }
  retire_finished();
  return !active_.empty();
}

Status BatchRunner::run() {
  while (true) {
    auto more = step();
    if (!more) {
      const FinishReason why =
          more.error().code() == Errc::resource_exhausted ? FinishReason::context_full : FinishReason::error;
      for (auto& [seq, a] : active_) finish(a, why);
      retire_finished();
      return more.error();
    }
    if (!*more) return {};
  }
}

void BatchRunner::cancel(SeqId seq, FinishReason reason) {
  auto it = active_.find(seq);
  if (it == active_.end()) return;
  finish(it->second, reason);
  retire_finished();
}

std::uint32_t BatchRunner::prompt_left(SeqId seq) const {
  auto it = active_.find(seq);
  if (it == active_.end()) return 0;
  const Active& a = it->second;
  return static_cast<std::uint32_t>((a.replay.size() - a.replay_done) + (a.job.prompt.size() - a.prompt_done));
}

Pos BatchRunner::prompt_end(SeqId seq) const {
  auto it = active_.find(seq);
  if (it == active_.end() || !it->second.replay.empty()) return 0;
  return it->second.first_pos + static_cast<Pos>(it->second.prompt_done);
}

std::uint32_t BatchRunner::replay_left(SeqId seq) const {
  auto it = active_.find(seq);
  if (it == active_.end()) return 0;
  return static_cast<std::uint32_t>(it->second.replay.size() - it->second.replay_done);
}

BatchRunner::Suspended::Suspended(Suspended&&) noexcept = default;
BatchRunner::Suspended& BatchRunner::Suspended::operator=(Suspended&&) noexcept = default;
BatchRunner::Suspended::~Suspended() = default;
Pos BatchRunner::Suspended::end_pos() const { return a_->next_pos; }
std::uint32_t BatchRunner::Suspended::prompt_left() const {
  return static_cast<std::uint32_t>(a_->job.prompt.size() - a_->prompt_done);
}
const std::vector<Token>& BatchRunner::Suspended::generated() const { return a_->out.tokens; }

std::optional<BatchRunner::Suspended> BatchRunner::suspend(SeqId seq) {
  auto it = active_.find(seq);
  if (it == active_.end() || it->second.stream.done()) return std::nullopt;
  Suspended s;
  s.a_ = std::make_unique<Active>(std::move(it->second));
  active_.erase(it);
  const Active& a = *s.a_;
  s.first_pos_ = a.first_pos;
  s.decoded_.assign(a.job.prompt.begin(), a.job.prompt.begin() + static_cast<std::ptrdiff_t>(a.prompt_done));
  // Every generated token is in the KV except the one sampled and not yet decoded.
  const std::size_t gen = a.out.tokens.size() - (a.pending != kNoToken ? 1 : 0);
  s.decoded_.insert(s.decoded_.end(), a.out.tokens.begin(), a.out.tokens.begin() + static_cast<std::ptrdiff_t>(gen));
  return s;
}

Status BatchRunner::resume(SeqId seq, Suspended s, std::vector<Token> replay) {
  if (!ctx_.valid_seq(seq)) return Error(Errc::invalid_argument, "no slot " + std::to_string(seq));
  if (active_.count(seq) != 0) return Error(Errc::invalid_argument, "slot " + std::to_string(seq) + " is busy");
  if (!s.a_) return Error(Errc::invalid_argument, "nothing to resume");
  const Pos held = ctx_.seq_pos_max(seq) + 1;
  const bool from_zero = held == 0 || ctx_.seq_pos_min(seq) == 0;
  if (!from_zero || held + static_cast<Pos>(replay.size()) != s.a_->next_pos) {
    return Error(Errc::internal, "slot " + std::to_string(seq) + " holds " + std::to_string(held) +
                                             " positions and " + std::to_string(replay.size()) +
                                             " are replayed; the job continues at " + std::to_string(s.a_->next_pos));
  }
  for (Token t : replay) {
    if (!tokenizer_.is_valid(t)) return Error(Errc::invalid_argument, "token " + std::to_string(t) + " is not in the vocabulary");
  }
  Active a = std::move(*s.a_);
  a.job.seq = seq;
  a.replay = std::move(replay);
  a.replay_done = 0;
  a.batch_index = -1;
  done_.erase(seq);
  active_.emplace(seq, std::move(a));
  return {};
}

std::vector<SeqId> BatchRunner::take_finished() { return std::exchange(finished_, {}); }

const SequenceOutcome* BatchRunner::outcome(SeqId seq) const {
  auto it = done_.find(seq);
  return it == done_.end() ? nullptr : &it->second;
}

std::optional<SequenceOutcome> BatchRunner::take_outcome(SeqId seq) {
  auto it = done_.find(seq);
  if (it == done_.end()) return std::nullopt;
  SequenceOutcome o = std::move(it->second);
  done_.erase(it);
  return o;
}

}  // namespace llmd::engine
