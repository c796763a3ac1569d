// Turning chat messages into a prompt with the model's chat template.
//
// The model's own template (GGUF key tokenizer.chat_template) is applied with llama.cpp's
// llama_chat_apply_template, which recognises the common template families by their text. The
// documented fallback: when the model has no template, or llama.cpp does not recognise it, the
// built-in "chatml" template is used (<|im_start|>role\ncontent<|im_end|>\n ...), and
// ChatPrompt::fallback says so. The fallback never fails on valid messages.
#pragma once

#include <span>
#include <string>

#include "common/result.h"
#include "engine/model.h"

namespace llmd::engine {

inline constexpr const char* kFallbackChatTemplate = "chatml";
inline constexpr size_t kMaxChatMessages = 4096;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (others are passed through as-is)
  std::string content;
};

struct ChatPrompt {
  std::string text;           // the formatted prompt
  std::string template_name;  // "model" when the model's template was used, else the fallback's name
  bool fallback = false;
};

// invalid_argument for no messages, more than kMaxChatMessages, an empty or over-long role, or
// text that is not UTF-8. add_assistant: end with the tokens that open an assistant turn.
Result<ChatPrompt> apply_chat_template(const Model& model, std::span<const ChatMessage> messages, bool add_assistant);

}  // namespace llmd::engine
