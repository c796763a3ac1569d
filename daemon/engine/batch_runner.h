// Runs several generations to completion on one context, batching them: every step is one
// llama_decode that carries the next token of each generating sequence plus as many prompt tokens
// (in order) as still fit in n_batch. It is the engine-level building block the daemon's engine
// loop follows, and what the tests and bench/ drive directly; the daemon's scheduler decides the
// order of work itself.
//
// Thread-safety: one thread, the one that owns the Context.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "daemon/engine/context.h"
#include "daemon/engine/generation.h"
#include "daemon/engine/sampler.h"
#include "daemon/engine/tokenizer.h"

namespace llmd::engine {

struct SequenceJob {
  SeqId seq = 0;
  std::vector<Token> prompt;  // appended after what the sequence already holds; at least one token
  GenerateParams params;
  // How many leading prompt tokens re-create history that was not resident (recompute); their
  // time is reported as restore_time rather than prefill_time.
  std::size_t restore_tokens = 0;
};

struct SequenceOutcome {
  std::vector<Token> tokens;  // generated tokens (an end-of-generation token included)
  std::string text;           // their text, stop strings cut
  FinishReason finish = FinishReason::none;
  std::int32_t n_prompt = 0;
  std::uint32_t seed = 0;
  std::chrono::microseconds restore_time{0};  // first step until the restore tokens were decoded
  std::chrono::microseconds prefill_time{0};  // then until the first sampled token
  std::chrono::microseconds decode_time{0};   // from the first sampled token to the end
};

class BatchRunner {
 public:
  using TokenCallback = std::function<void(SeqId, Token, std::string_view text)>;

  BatchRunner(Context& ctx, const Tokenizer& tokenizer) : ctx_(ctx), tokenizer_(tokenizer) {}

  // Adds a job on an idle slot. invalid_argument for a bad slot, a slot already in use by this
  // runner, an empty prompt, a token outside the vocabulary or bad parameters.
  Status add(SequenceJob job);
  // One decode step; false once every job has finished. On a decode error nothing of the step is
  // kept (llama.cpp restores the KV, the runner its positions), every job stays active and the
  // error is returned: the caller may free KV cells and step again, or cancel() jobs.
  Result<bool> step();
  // Steps until every job has finished; on a decode error every job ends with FinishReason::error
  // (context_full if the KV pool was full) and the error is returned.
  Status run();

  // Ends a job now (FinishReason::cancelled unless it already finished); its outcome is available
  // after the call. No-op for an unknown slot.
  void cancel(SeqId seq, FinishReason reason = FinishReason::cancelled);
  bool active(SeqId seq) const { return active_.count(seq) != 0; }
  bool empty() const { return active_.empty(); }
  // Slots whose jobs finished since the last call, in the order they finished.
  std::vector<SeqId> take_finished();

  void on_token(TokenCallback cb) { on_token_ = std::move(cb); }
  const SequenceOutcome* outcome(SeqId seq) const;
  // Removes and returns a finished job's outcome (nullopt if there is none).
  std::optional<SequenceOutcome> take_outcome(SeqId seq);

 private:
  struct Active {
    SequenceJob job;
    Sampler sampler;
    TextStream stream;
    SequenceOutcome out;
    Pos next_pos = 0;
    std::size_t prompt_done = 0;
    Token pending = kNoToken;  // sampled, not yet decoded
    std::int32_t batch_index = -1;
    std::optional<std::chrono::steady_clock::time_point> started, restored, first_token;
  };

  void finish(Active& a, FinishReason reason);
  void retire_finished();

  Context& ctx_;
  const Tokenizer& tokenizer_;
  std::map<SeqId, Active> active_;
  std::map<SeqId, SequenceOutcome> done_;
  std::vector<SeqId> finished_;
  TokenCallback on_token_;
};

}  // namespace llmd::engine
