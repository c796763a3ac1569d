// Runs several generations to completion on one context, batching them: every step is one
// llama_decode that carries the next token of each generating sequence plus prompt tokens — as
// many as fit in n_batch, in slot order, or exactly the chunks a StepLimits names (the daemon's
// scheduler decides them). A job can be suspended mid-way (its sampler, text stream and position
// kept) and resumed later on a slot whose KV holds the same tokens again, loaded or replayed:
// preemption that continues exactly.
//
// Thread-safety: one thread, the one that owns the Context.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/context.h"
#include "engine/generation.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

namespace llmd::engine {

struct SequenceJob {
  SeqId seq = 0;
  std::vector<Token> prompt;  // appended after what the sequence already holds; at least one token
  GenerateParams params;
  // How many leading prompt tokens re-create history that was not resident (recompute); their
  // time is reported as restore_time rather than prefill_time.
  std::size_t restore_tokens = 0;
  // The position the prompt must start at: the slot must hold exactly positions 0 .. at-1 (the
  // caller's claim about what its KV holds, checked before anything is decoded on it). -1: no
  // claim, the prompt continues whatever the slot holds.
  Pos at = -1;
};

struct SequenceOutcome {
  std::vector<Token> tokens;  // generated tokens (an end-of-generation token included)
  std::vector<TokenLogprob> logprobs;  // one per generated token when params.top_logprobs >= 0
  bool grammar_dead_end = false;       // finish error: the grammar allowed no token of the vocabulary
  std::string text;           // their text, stop strings cut
  FinishReason finish = FinishReason::none;
  std::int32_t n_prompt = 0;
  std::uint32_t seed = 0;
  std::chrono::microseconds restore_time{0};  // first step until the restore tokens were decoded
  std::chrono::microseconds prefill_time{0};  // then until the first sampled token
  std::chrono::microseconds decode_time{0};   // from the first sampled token to the end
};

// Which prompt tokens one step carries: (slot, at most this many) in this order. Slots not named
// get none this step; generating slots get their one token, except those in `hold` (the
// scheduler's pacing: they sit this step out, nothing about them changes).
struct StepLimits {
  std::vector<std::pair<SeqId, std::uint32_t>> prefill;
  std::vector<SeqId> hold;
};

class BatchRunner {
  struct Active;

 public:
  // A sampled token (kNoToken when only held-back text is released at the end), the text it makes
  // showable, and its log-probabilities (null unless the job asked for them).
  using TokenCallback = std::function<void(SeqId, Token, std::string_view text, const TokenLogprob* logprob)>;

  // A job taken off its slot mid-way. Move-only.
  class Suspended {
   public:
    Suspended(Suspended&&) noexcept;
    Suspended& operator=(Suspended&&) noexcept;
    ~Suspended();
    // The tokens the job had put into its slot's KV (its positions first_pos() .. end_pos()-1):
    // the prompt tokens decoded so far, then the generated tokens decoded so far.
    const std::vector<Token>& decoded() const { return decoded_; }
    Pos first_pos() const { return first_pos_; }
    Pos end_pos() const;
    // Prompt tokens not decoded yet.
    std::uint32_t prompt_left() const;
    const std::vector<Token>& generated() const;

   private:
    friend class BatchRunner;
    Suspended() = default;
    std::unique_ptr<Active> a_;
    std::vector<Token> decoded_;
    Pos first_pos_ = 0;
  };

  BatchRunner(Context& ctx, const Tokenizer& tokenizer) : ctx_(ctx), tokenizer_(tokenizer) {}

  // Adds a job on an idle slot. invalid_argument for a bad slot, a slot already in use by this
  // runner, an empty prompt, a token outside the vocabulary or bad parameters; internal when the
  // slot does not hold exactly positions 0 .. job.at-1 (job.at >= 0): never decode on a guess.
  Status add(SequenceJob job);
  // One decode step; false once every job has finished. With `limits`, prompt tokens go only to the
  // slots it names, at most as many as it says, in its order (still within n_batch). On a decode error nothing of the step is
  // kept (llama.cpp restores the KV, the runner its positions), every job stays active and the
  // error is returned: the caller may free KV cells and step again, or cancel() jobs.
  Result<bool> step(const StepLimits* limits = nullptr);
  // Steps until every job has finished; on a decode error every job ends with FinishReason::error
  // (context_full if the KV pool was full) and the error is returned.
  Status run();

  // Ends a job now (FinishReason::cancelled unless it already finished); its outcome is available
  // after the call. No-op for an unknown slot.
  void cancel(SeqId seq, FinishReason reason = FinishReason::cancelled);
  bool active(SeqId seq) const { return active_.count(seq) != 0; }
  // Tokens a job still has to decode before it generates (replay + prompt); 0 if it is generating
  // or unknown.
  std::uint32_t prompt_left(SeqId seq) const;
  // Of those, the tokens a resumed job replays (no token is sampled when only these are left).
  std::uint32_t replay_left(SeqId seq) const;
  // How many leading positions of the slot's KV hold what the slot held when the job was added
  // followed by the job's prompt tokens decoded so far (job.at + those); 0 for an unknown slot
  // or a resumed job (its KV was rebuilt by a replay).
  Pos prompt_end(SeqId seq) const;

  // Takes a running job off its slot, keeping all of its state; the slot's KV is left as it is
  // (the caller may save it, then clear it). nullopt for an unknown or finished slot.
  std::optional<Suspended> suspend(SeqId seq);
  // Continues a suspended job on idle slot `seq`, whose KV must hold what it held at suspension
  // except its last `replay.size()` positions, which are decoded first: replay is those tokens (the
  // caller's to get right, e.g. history that was not restored followed by s.decoded()'s tail).
  // invalid_argument if the slot is busy; internal (an invariant broken: the caller's claim about
  // the slot's KV is wrong) unless the slot holds exactly positions 0 .. s.end_pos() - replay.size() - 1.
  Status resume(SeqId seq, Suspended s, std::vector<Token> replay);
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
    Pos first_pos = 0;  // where the job's tokens begin in its slot
    Pos next_pos = 0;
    std::vector<Token> replay;  // resumed: tokens to decode again before anything else
    std::size_t replay_done = 0;
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
