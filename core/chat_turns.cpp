// Requests to tokens (see chat_turns.h).
#include "core/chat_turns.h"

#include <algorithm>

namespace llmd::core {

Result<std::vector<engine::Token>> turn_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                               std::span<const engine::ChatMessage> messages,
                                               std::size_t history_tokens, const std::string& user_message,
                                               const engine::ChatOptions& chat) {
  const engine::ChatMessage user{"user", user_message};
  return turn_tokens(model, tok, messages, history_tokens, std::span(&user, 1), chat);
}

Result<std::vector<engine::Token>> turn_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                               std::span<const engine::ChatMessage> messages,
                                               std::size_t history_tokens, std::span<const engine::ChatMessage> added,
                                               const engine::ChatOptions& chat) {
  std::vector<engine::ChatMessage> all(messages.begin(), messages.end());
  all.insert(all.end(), added.begin(), added.end());
  auto full = engine::apply_chat_template(model, all, /*add_assistant=*/true, chat);
  if (!full) return full.error();
  std::string text = std::move(full->text);
  if (history_tokens > 0 && !messages.empty()) {
    auto prev = engine::apply_chat_template(model, messages, /*add_assistant=*/false, chat);
    if (!prev) return prev.error();
    // Templates render a conversation prefix-stably; where one does not, the common prefix is the
    // best available split.
    const auto mismatch = std::mismatch(prev->text.begin(), prev->text.end(), text.begin(), text.end());
    text.erase(0, static_cast<std::size_t>(mismatch.second - text.begin()));
  }
  // The very first text of a sequence starts with BOS (when the model wants one).
  return tok.tokenize(text, /*add_special=*/history_tokens == 0, /*parse_special=*/true);
}

Result<std::vector<engine::Token>> answer_closing(const engine::Model& model, const engine::Tokenizer& tok,
                                                  std::span<const engine::ChatMessage> messages,
                                                  std::span<const engine::Token> tokens,
                                                  const engine::ChatOptions& chat) {
  if (messages.size() < 2 || messages.back().role != "assistant" || tokens.empty()) return std::vector<engine::Token>{};
  auto opened = engine::apply_chat_template(model, messages.first(messages.size() - 1), /*add_assistant=*/true, chat);
  if (!opened) return opened.error();
  auto closed = engine::apply_chat_template(model, messages, /*add_assistant=*/false, chat);
  if (!closed) return closed.error();
  const std::string answered = opened->text + messages.back().content;
  if (closed->text.size() <= answered.size() || closed->text.compare(0, answered.size(), answered) != 0) {
    return std::vector<engine::Token>{};
  }
  std::string tail = closed->text.substr(answered.size());
  if (tok.is_eog(tokens.back())) {
    const std::string eog = tok.piece(tokens.back(), /*render_special=*/true);
    if (!eog.empty() && tail.compare(0, eog.size(), eog) == 0) tail.erase(0, eog.size());
  }
  if (tail.empty()) return std::vector<engine::Token>{};
  auto t = tok.tokenize(tail, /*add_special=*/false, /*parse_special=*/true);
  if (!t) return t.error();
  if (t->size() <= tokens.size() && std::equal(t->rbegin(), t->rend(), tokens.rbegin())) {
    return std::vector<engine::Token>{};  // already there (a rewind kept it)
  }
  return t;
}

Result<std::vector<engine::Token>> conversation_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                                       std::span<const engine::ChatMessage> messages,
                                                       bool add_assistant, const engine::ChatOptions& chat) {
  auto text = engine::apply_chat_template(model, messages, add_assistant, chat);
  if (!text) return text.error();
  return tok.tokenize(text->text, /*add_special=*/true, /*parse_special=*/true);
}

std::optional<std::size_t> turn_boundary(const engine::Model& model, const engine::Tokenizer& tok,
                                         std::span<const engine::ChatMessage> messages,
                                         std::span<const engine::Token> tokens, std::size_t keep,
                                         const engine::ChatOptions& chat) {
  std::size_t from = 0;  // where the next turn's prompt may start
  bool first = true;
  for (std::size_t u = 0; u < messages.size(); ++u) {
    if (messages[u].role != "user") continue;
    // Only whether history_tokens is 0 matters to turn_tokens (BOS), not its value.
    auto input = turn_tokens(model, tok, messages.first(u), first ? 0 : 1, messages[u].content, chat);
    if (!input || input->empty()) return std::nullopt;
    std::optional<std::size_t> at;
    const std::size_t last = first ? 0 : tokens.size();  // turn 1 starts the sequence
    for (std::size_t q = from; q <= last && q + input->size() <= tokens.size(); ++q) {
      if (std::equal(input->begin(), input->end(), tokens.begin() + static_cast<std::ptrdiff_t>(q))) {
        at = q;
        break;
      }
    }
    if (!at) return std::nullopt;
    if (u >= keep) return *at;
    from = *at + input->size() + 1;  // a saved turn generated at least one token
    first = false;
  }
  return std::nullopt;
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
