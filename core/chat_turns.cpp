// Requests to tokens (see chat_turns.h).
#include "core/chat_turns.h"

#include <algorithm>

namespace llmd::core {

Result<std::vector<engine::Token>> turn_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                               std::span<const engine::ChatMessage> messages,
                                               std::size_t history_tokens, const std::string& user_message) {
  std::vector<engine::ChatMessage> all(messages.begin(), messages.end());
  all.push_back({"user", user_message});
  auto full = engine::apply_chat_template(model, all, /*add_assistant=*/true);
  if (!full) return full.error();
  std::string text = std::move(full->text);
  if (history_tokens > 0 && !messages.empty()) {
    auto prev = engine::apply_chat_template(model, messages, /*add_assistant=*/false);
    if (!prev) return prev.error();
    // Templates render a conversation prefix-stably; where one does not, the common prefix is the
    // best available split.
    const auto mismatch = std::mismatch(prev->text.begin(), prev->text.end(), text.begin(), text.end());
    text.erase(0, static_cast<std::size_t>(mismatch.second - text.begin()));
  }
  // The very first text of a sequence starts with BOS (when the model wants one).
  return tok.tokenize(text, /*add_special=*/history_tokens == 0, /*parse_special=*/true);
}

Result<std::vector<engine::Token>> conversation_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                                       std::span<const engine::ChatMessage> messages,
                                                       bool add_assistant) {
  auto text = engine::apply_chat_template(model, messages, add_assistant);
  if (!text) return text.error();
  return tok.tokenize(text->text, /*add_special=*/true, /*parse_special=*/true);
}

Result<std::vector<engine::Token>> prompt_tokens(const engine::Tokenizer& tok, const std::string& prompt) {
  return tok.tokenize(prompt, /*add_special=*/true, /*parse_special=*/false);
}

Status check_context(std::size_t history, std::size_t input, std::uint32_t max_seq_len, SeqUse use,
                     std::string param) {
  const std::size_t total = history + input;
  const std::size_t cells = use == SeqUse::turn ? total + 1 : total;
  if (cells <= max_seq_len) return {};
  return Error(Errc::invalid_argument,
               "context_length_exceeded: " +
                   (history == 0 ? "the prompt has " + std::to_string(input) + " tokens"
                                 : "the session holds " + std::to_string(history) + " tokens and the message adds " +
                                       std::to_string(input)) +
                   "; the context holds " + std::to_string(max_seq_len))
      .with_limit(std::move(param), max_seq_len, total)
      .with_reason(Reason::context_length_exceeded);
}

}  // namespace llmd::core
