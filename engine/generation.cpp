// Generation parameters and the token-to-text stream (see generation.h).
#include "engine/generation.h"

#include <algorithm>

namespace llmd::engine {

Status validate_generate(const GenerateParams& p) {
  if (p.max_tokens < 1 || p.max_tokens > kMaxGenerateTokens) {
    return Error(Errc::invalid_argument, "max_tokens must be between 1 and " + std::to_string(kMaxGenerateTokens));
  }
  LLMD_TRY_STATUS(validate_sampling(p.sampling));
  if (p.top_logprobs < -1 || p.top_logprobs > kMaxTopLogprobs) {
    return Error(Errc::invalid_argument, "top_logprobs must be between 0 and " + std::to_string(kMaxTopLogprobs))
        .with_param("top_logprobs");
  }
  return validate_stop_strings(p.stop);
}

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::none: return "none";
    case FinishReason::eog: return "eog";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::context_full: return "context_full";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::error: return "error";
  }
  return "none";
}

TextStream::Delta TextStream::flush(FinishReason reason, std::string text) {
  Delta d;
  auto out = stop_.push(text + utf8_.finish());
  d.text = std::move(out.text);
  if (out.stopped) {
    reason = FinishReason::stop;
  } else {
    d.text += stop_.finish();
  }
  d.finish = finish_ = reason;
  text_ += d.text;
  return d;
}

TextStream::Delta TextStream::push(Token token) {
  if (done()) return {};
  ++n_generated_;
  if (!ignore_eog_ && tokenizer_.is_eog(token)) return flush(FinishReason::eog, {});
  const bool shown = std::find(shown_special_.begin(), shown_special_.end(), token) != shown_special_.end();
  std::string complete = utf8_.push(tokenizer_.piece(token, /*render_special=*/shown));
  if (n_generated_ >= max_tokens_) return flush(FinishReason::length, std::move(complete));
  Delta d;
  auto out = stop_.push(complete);
  d.text = std::move(out.text);
  if (out.stopped) d.finish = finish_ = FinishReason::stop;
  text_ += d.text;
  return d;
}

TextStream::Delta TextStream::end(FinishReason reason) {
  if (done()) return {};
  return flush(reason, {});
}

}  // namespace llmd::engine
