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
};

struct SequenceOutcome {
  std::vector<Token> tokens;  // generated tokens (an end-of-generation token included)
  std::string text;           // their text, stop strings cut
  FinishReason finish = FinishReason::none;
  std::int32_t n_prompt = 0;
  std::uint32_t seed = 0;
  std::chrono::microseconds prefill_time{0};  // from the first step to the first sampled token
  std::chrono::microseconds decode_time{0};   // from the first sampled token to the end
};

class BatchRunner {
 public:
  using TokenCallback = std::function<void(SeqId, Token, std::string_view text)>;

  BatchRunner(Context& ctx, const Tokenizer& tokenizer) : ctx_(ctx), tokenizer_(tokenizer) {}

  // Adds a job on an idle slot. invalid_argument for a bad slot, a slot already in use by this
  // runner, an empty prompt, a token outside the vocabulary or bad parameters.
  Status add(SequenceJob job);
  // One decode step; false once every job has finished.
  Result<bool> step();
  // Steps until every job has finished.
  Status run();

  void on_token(TokenCallback cb) { on_token_ = std::move(cb); }
  const SequenceOutcome* outcome(SeqId seq) const;

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
    std::optional<std::chrono::steady_clock::time_point> started, first_token;
  };

  void finish(Active& a, FinishReason reason);

  Context& ctx_;
  const Tokenizer& tokenizer_;
  std::map<SeqId, Active> active_;
  std::map<SeqId, SequenceOutcome> done_;
  TokenCallback on_token_;
};

}  // namespace llmd::engine
