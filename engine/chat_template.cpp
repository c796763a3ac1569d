// Chat template application with a documented fallback (see chat_template.h).
#include "engine/chat_template.h"

#include <llama.h>

#include <vector>

#include "common/utf8.h"

namespace llmd::engine {
namespace {

constexpr size_t kMaxRoleBytes = 32;

// Returns the formatted length, or -1 if llama.cpp does not support the template.
int32_t apply(const char* tmpl, const std::vector<llama_chat_message>& msgs, bool add_ass, std::string& out) {
  size_t total = 256;
  for (const auto& m : msgs) total += std::char_traits<char>::length(m.content) + 64;
  out.assign(total * 2, '\0');
  int32_t n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_ass, out.data(),
                                        static_cast<int32_t>(out.size()));
  if (n > static_cast<int32_t>(out.size())) {
    out.assign(static_cast<size_t>(n), '\0');
    n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_ass, out.data(),
                                  static_cast<int32_t>(out.size()));
  }
  if (n >= 0) out.resize(static_cast<size_t>(n));
  return n;
}

}  // namespace

Result<ChatPrompt> apply_chat_template(const Model& model, std::span<const ChatMessage> messages, bool add_assistant) {
  if (messages.empty()) return Error(Errc::invalid_argument, "at least one message is needed");
  if (messages.size() > kMaxChatMessages) {
    return Error(Errc::invalid_argument, "at most " + std::to_string(kMaxChatMessages) + " messages are allowed");
  }
  std::vector<llama_chat_message> msgs;
  msgs.reserve(messages.size());
  for (const auto& m : messages) {
    if (m.role.empty() || m.role.size() > kMaxRoleBytes) {
      return Error(Errc::invalid_argument, "a message role must be 1 to " + std::to_string(kMaxRoleBytes) + " bytes");
    }
    if (!is_valid_utf8(m.role) || !is_valid_utf8(m.content)) {
      return Error(Errc::invalid_argument, "message text is not valid UTF-8");
    }
    if (m.content.find('\0') != std::string::npos || m.role.find('\0') != std::string::npos) {
      return Error(Errc::invalid_argument, "message text must not contain NUL characters");
    }
    msgs.push_back({m.role.c_str(), m.content.c_str()});
  }

  ChatPrompt prompt;
  if (model.info().has_chat_template &&
      apply(model.info().chat_template.c_str(), msgs, add_assistant, prompt.text) >= 0) {
    prompt.template_name = "model";
    return prompt;
  }
  if (apply(kFallbackChatTemplate, msgs, add_assistant, prompt.text) < 0) {
    return Error(Errc::internal, "the fallback chat template is not available");
  }
  prompt.template_name = kFallbackChatTemplate;
  prompt.fallback = true;
  return prompt;
}

}  // namespace llmd::engine
