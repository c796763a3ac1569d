// What one generation request asks for, and TextStream: generated tokens in, showable text out,
// with the decision of when generation ends (end-of-generation token, stop string, max tokens).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/sampler.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer.h"
#include "common/utf8.h"

namespace llmd::engine {

inline constexpr std::int32_t kMaxGenerateTokens = 1 << 20;

struct GenerateParams {
  SamplingParams sampling;
  std::int32_t max_tokens = 256;   // [1, kMaxGenerateTokens]
  std::vector<std::string> stop;   // see validate_stop_strings
  bool ignore_eog = false;         // treat end-of-generation tokens as ordinary text (benchmarks)
  // -1: no log-probabilities; else each generated token's, with this many alternatives
  // [0, kMaxTopLogprobs] (SequenceOutcome::logprobs, and per token as it is sampled).
  std::int32_t top_logprobs = -1;
  // Special tokens whose text the answer shows (a format's preserved tokens: the tool-call markers
  // of templates that write them as special tokens, so the parser finds them); others show none.
  std::vector<Token> shown_special;
};

Status validate_generate(const GenerateParams& params);

enum class FinishReason {
  none,          // still running
  eog,           // the model produced an end-of-generation token
  stop,          // a stop string appeared
  length,        // max_tokens reached
  context_full,  // the sequence or the KV pool has no room for another token
  cancelled,     // the caller cancelled
  error,         // a decode failed
};
std::string_view finish_reason_name(FinishReason reason);

class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop, std::int32_t max_tokens,
             bool ignore_eog = false, std::vector<Token> shown_special = {})
      : tokenizer_(tokenizer),
        stop_(std::move(stop)),
        max_tokens_(max_tokens),
        ignore_eog_(ignore_eog),
        shown_special_(std::move(shown_special)) {}

  struct Delta {
    std::string text;                          // text that can be shown now (may be empty)
    FinishReason finish = FinishReason::none;  // set on the token that ends generation
  };

  // One generated token. An end-of-generation token adds no text.
  Delta push(Token token);
  // Ends generation for a reason decided outside (context full, cancelled, error) and releases
  // the text held back so far.
  Delta end(FinishReason reason);

  std::int32_t n_generated() const { return n_generated_; }
  FinishReason finish() const { return finish_; }
  bool done() const { return finish_ != FinishReason::none; }
  const std::string& text() const { return text_; }  // everything emitted so far

 private:
  Delta flush(FinishReason reason, std::string text);

  const Tokenizer& tokenizer_;
  Utf8Assembler utf8_;
  StopMatcher stop_;
  std::int32_t max_tokens_;
  bool ignore_eog_;
  std::vector<Token> shown_special_;
  std::int32_t n_generated_ = 0;
  FinishReason finish_ = FinishReason::none;
  std::string text_;
};

}  // namespace llmd::engine
