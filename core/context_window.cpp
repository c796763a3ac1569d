// The model's window over a conversation (see context_window.h).
#include "core/context_window.h"

#include <algorithm>

#include "core/chat_turns.h"

namespace llmd::core {

std::string_view overflow_name(Overflow o) {
  switch (o) {
    case Overflow::error: return "error";
    case Overflow::drop_oldest: return "drop_oldest";
    case Overflow::sliding: return "sliding";
  }
  return "error";
}

Result<Overflow> parse_overflow(std::string_view name, std::string param) {
  for (Overflow o : {Overflow::error, Overflow::drop_oldest, Overflow::sliding}) {
    if (name == overflow_name(o)) return o;
  }
  return Error(Errc::invalid_argument, param + " must be \"error\", \"drop_oldest\" or \"sliding\"").with_param(param);
}

Status check_stateless_overflow(Overflow o, std::string param) {
  if (o != Overflow::sliding) return {};
  return Error(Errc::unsupported, param +
                                      " \"sliding\" shifts a session's KV between its turns; a stateless request "
                                      "keeps none to shift: use a session, or \"drop_oldest\" or \"error\"")
      .with_param(std::move(param));
}

std::size_t fill_target_tokens(std::uint32_t max_seq_len, std::uint32_t fill_target_percent) {
  const std::uint32_t pct = std::clamp<std::uint32_t>(fill_target_percent, 1, 100);
  return std::max<std::size_t>(1, std::size_t{max_seq_len} * pct / 100);
}

std::size_t answer_room(std::int32_t max_tokens, std::uint32_t max_seq_len, std::size_t target) {
  const std::size_t headroom = max_seq_len > target ? max_seq_len - target : 1;
  const std::size_t wanted = max_tokens > 0 ? static_cast<std::size_t>(max_tokens) : 1;
  return std::max<std::size_t>(1, std::min(wanted, headroom));
}

bool must_move(std::size_t history, std::size_t input, std::uint32_t max_seq_len, std::size_t room) {
  return history + input + room > max_seq_len;
}

bool boundaries_known(const WindowTokens& w) {
  std::size_t last = w.head_end;
  bool any = false;
  for (const auto& m : w.messages) {
    if (m.system) {
      if (any) return false;  // a system message after the turns began: no head to keep apart
      continue;
    }
    if (!m.token_end || *m.token_end <= last) return false;
    last = *m.token_end;
    any = true;
  }
  return last == w.n_tokens && w.head_end <= w.n_tokens;
}

Result<DropPlan> plan_drop(const WindowTokens& w, std::size_t input, std::uint32_t max_seq_len, std::size_t target,
                           const std::string& param) {
  if (w.head_end + input + 1 > max_seq_len) {
    return Error(Errc::invalid_argument,
                 "context_length_exceeded: the message has " + std::to_string(input) + " tokens" +
                     (w.head_end > 0 ? " and the system prompt " + std::to_string(w.head_end) : std::string()) +
                     "; it does not fit the context of " + std::to_string(max_seq_len) +
                     " even with every earlier turn dropped")
        .with_limit(param, max_seq_len, w.head_end + input)
        .with_reason(Reason::context_length_exceeded);
  }
  // The turns: each starts at a user message. Dropping the turns before start s cuts the sequence
  // where the message before s ends.
  std::vector<std::size_t> turns;  // indexes into w.messages of non-system user messages
  for (std::size_t i = 0; i < w.messages.size(); ++i) {
    if (!w.messages[i].system && w.messages[i].user) turns.push_back(i);
  }
  DropPlan plan;
  plan.cut = w.n_tokens;
  plan.first_message = w.next_seq;
  std::size_t first_kept = w.messages.size();
  // The first turn start is never a cut (nothing before it to drop): at least one turn goes.
  for (std::size_t t = 1; t < turns.size(); ++t) {
    const std::size_t cut = *w.messages[turns[t] - 1].token_end;
    if (w.head_end + (w.n_tokens - cut) + input <= target) {
      plan.cut = cut;
      plan.first_message = w.messages[turns[t]].seq;
      first_kept = turns[t];
      break;
    }
  }
  for (std::size_t i = 0; i < first_kept; ++i) plan.dropped_messages += w.messages[i].system ? 0 : 1;
  return plan;
}

Result<std::vector<engine::Token>> head_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                               std::span<const engine::ChatMessage> system_messages,
                                               const engine::ChatOptions& chat) {
  if (system_messages.empty()) {
    std::vector<engine::Token> bos;
    if (tok.adds_bos()) bos.push_back(tok.bos());
    return bos;
  }
  return conversation_tokens(model, tok, system_messages, /*add_assistant=*/false, chat);
}

Result<DerivedWindow> derive_window(const engine::Model& model, const engine::Tokenizer& tok,
                                    std::span<const engine::ChatMessage> messages, const engine::ChatOptions& chat) {
  DerivedWindow out;
  std::size_t n_system = 0;
  while (n_system < messages.size() && messages[n_system].role == "system") ++n_system;
  if (n_system == messages.size()) return out;  // no turns yet: a session holds no tokens before its first
  auto head = head_tokens(model, tok, messages.first(n_system), chat);
  if (!head) return head.error();
  out.tokens = std::move(*head);
  out.ends.assign(n_system, static_cast<std::uint32_t>(out.tokens.size()));
  // A turn's messages: a user message or tool results; the answer opens after the last of them.
  const auto asks = [&](std::size_t i) { return messages[i].role == "user" || messages[i].role == "tool"; };
  for (std::size_t i = n_system; i < messages.size(); ++i) {
    const auto before = messages.first(i);
    std::vector<engine::Token> add;
    if (i == n_system && messages[i].role != "user") {
      return Error(Errc::invalid_argument, "a conversation's first turn must be the user's");
    }
    if (asks(i) && (i == n_system || i + 1 == messages.size() || !asks(i + 1))) {
      // As the turn that brought it: the message and the opening of the answer.
      auto t = turn_tokens(model, tok, before, out.tokens.size(), messages.subspan(i, 1), chat);
      if (!t) return t.error();
      add = std::move(*t);
    } else {
      // The text the template adds for this message after what came before (the answer's
      // opening included there when the message before ended a turn's messages).
      auto prev = engine::apply_chat_template(model, before, /*add_assistant=*/asks(i - 1) && !asks(i), chat);
      if (!prev) return prev.error();
      auto full = engine::apply_chat_template(model, messages.first(i + 1), /*add_assistant=*/false, chat);
      if (!full) return full.error();
      const auto mismatch = std::mismatch(prev->text.begin(), prev->text.end(), full->text.begin(), full->text.end());
      auto t = tok.tokenize(std::string(mismatch.second, full->text.end()), /*add_special=*/false, /*parse_special=*/true);
      if (!t) return t.error();
      add = std::move(*t);
    }
    out.tokens.insert(out.tokens.end(), add.begin(), add.end());
    out.ends.push_back(static_cast<std::uint32_t>(out.tokens.size()));
  }
  return out;
}

Result<ChatDrop> drop_oldest_chat(const engine::Model& model, const engine::Tokenizer& tok,
                                  std::span<const engine::ChatMessage> messages, std::size_t full_tokens,
                                  std::uint32_t max_seq_len, std::size_t target, const engine::ChatOptions& chat) {
  std::vector<engine::ChatMessage> system;
  std::size_t n_system = 0;
  while (n_system < messages.size() && messages[n_system].role == "system") system.push_back(messages[n_system++]);
  std::vector<std::size_t> starts;  // turn starts: user messages after the system prompt
  for (std::size_t i = n_system; i < messages.size(); ++i) {
    if (messages[i].role == "user") starts.push_back(i);
  }
  if (starts.empty()) starts.push_back(n_system);
  auto kept = [&](std::size_t from) {
    std::vector<engine::ChatMessage> m = system;
    m.insert(m.end(), messages.begin() + static_cast<std::ptrdiff_t>(from), messages.end());
    return conversation_tokens(model, tok, m, /*add_assistant=*/true, chat);
  };
  // The earliest start after the first whose conversation fits the target; else the last turn
  // alone. Fewer turns never take more tokens, so a binary search finds it (log2(turns) renderings
  // of the conversation, not one per turn).
  if (starts.size() > 1) {
    std::size_t lo = 1, hi = starts.size() - 1;  // the answer is in [lo, hi]; hi is the fallback
    std::optional<std::vector<engine::Token>> at_hi;
    while (lo < hi) {
      const std::size_t mid = lo + (hi - lo) / 2;
      auto toks = kept(starts[mid]);
      if (!toks) return toks.error();
      if (toks->size() <= target) {
        hi = mid;
        at_hi = std::move(*toks);
      } else {
        lo = mid + 1;
      }
    }
    if (!at_hi) {
      auto toks = kept(starts[hi]);
      if (!toks) return toks.error();
      at_hi = std::move(*toks);
    }
    if (at_hi->size() + 1 <= max_seq_len) {
      ChatDrop out;
      out.report.moved = true;
      out.report.first_message = static_cast<std::int64_t>(starts[hi]);
      out.report.dropped_messages = static_cast<std::uint32_t>(starts[hi] - n_system);
      out.report.dropped_tokens = full_tokens > at_hi->size() ? full_tokens - at_hi->size() : 0;
      out.tokens = std::move(*at_hi);
      return out;
    }
  }
  auto last = kept(starts.back());
  if (!last) return last.error();
  return Error(Errc::invalid_argument, "context_length_exceeded: the last turn has " + std::to_string(last->size()) +
                                           " tokens with the system prompt; it does not fit the context of " +
                                           std::to_string(max_seq_len) + " even with every earlier turn dropped")
      .with_limit("messages", max_seq_len, last->size())
      .with_reason(Reason::context_length_exceeded);
}

}  // namespace llmd::core

namespace llmd::core {

std::vector<kvstore::MessageRecord> window_messages(const kvstore::SessionRecord& session,
                                                    const std::vector<kvstore::MessageRecord>& messages) {
  std::vector<kvstore::MessageRecord> out;
  for (const auto& m : messages) {
    if (m.role == "system" || m.seq >= session.window_first_message) out.push_back(m);
  }
  return out;
}

namespace {

std::vector<engine::ChatMessage> chat_of_records(std::span<const kvstore::MessageRecord> records) {
  std::vector<engine::ChatMessage> out;
  for (const auto& m : records) out.push_back({m.role, m.content});
  return out;
}

std::size_t leading_system(std::span<const kvstore::MessageRecord> window) {
  std::size_t n = 0;
  while (n < window.size() && window[n].role == "system") ++n;
  return n;
}

}  // namespace

Result<SessionTurnPlan> plan_session_turn(const engine::Model& model, const engine::Tokenizer& tok,
                                          std::vector<kvstore::MessageRecord> window, std::int64_t first_message,
                                          std::int64_t next_seq, std::vector<engine::Token> tokens,
                                          std::span<const engine::ChatMessage> added, std::uint32_t max_seq_len,
                                          Overflow policy, std::size_t target, std::int32_t max_tokens,
                                          const engine::ChatOptions& chat) {
  SessionTurnPlan plan;
  plan.report.first_message = first_message;
  const std::size_t n_system = leading_system(window);
  const auto system_chat = chat_of_records(std::span(window).first(n_system));
  auto chat_msgs = chat_of_records(window);
  if (tokens.empty()) {
    // The first turn: the system prompt's tokens end where its rendering does, if the template
    // renders it apart (the prefix check); else its end stays unknown.
    auto input = turn_tokens(model, tok, chat_msgs, 0, added, chat);
    if (!input) return input.error();
    if (n_system > 0) {
      auto head = head_tokens(model, tok, system_chat, chat);
      if (!head) return head.error();
      if (head->size() <= input->size() && std::equal(head->begin(), head->end(), input->begin())) {
        for (std::size_t i = 0; i < n_system; ++i) plan.change.token_ends[window[i].seq] = static_cast<std::uint32_t>(head->size());
        if (policy != Overflow::error) {
          WindowTokens w;
          w.head_end = head->size();
          LLMD_TRY_STATUS(plan_drop(w, input->size() - head->size(), max_seq_len, target, "content"));
        }
      }
    }
    plan.input = std::move(*input);
    plan.user_token_end = static_cast<std::uint32_t>(plan.input.size());
    return plan;
  }
  // The last answer's closing joins the history (and that answer's tokens in the store), so the
  // sequence is the template's, as a client resending the conversation would send it.
  auto closing = answer_closing(model, tok, chat_msgs, tokens, chat);
  if (!closing) return closing.error();
  plan.closing = closing->size();
  if (!closing->empty()) {
    tokens.insert(tokens.end(), closing->begin(), closing->end());
    if (window.back().role == "assistant") {
      window.back().token_end = static_cast<std::uint32_t>(tokens.size());
      plan.change.token_ends[window.back().seq] = static_cast<std::uint32_t>(tokens.size());
    }
    plan.change.tokens = tokens;  // replaced below if the window moves
  }
  auto input = turn_tokens(model, tok, chat_msgs, tokens.size(), added, chat);
  if (!input) return input.error();
  const std::size_t room = answer_room(max_tokens, max_seq_len, target);
  if (policy == Overflow::error || !must_move(tokens.size(), input->size(), max_seq_len, room)) {
    plan.history = std::move(tokens);
    plan.input = std::move(*input);
    plan.user_token_end = static_cast<std::uint32_t>(plan.history.size() + plan.input.size());
    return plan;
  }

  // drop_oldest and sliding. The head: where the stored system prompt ends, else what its rendering gives if
  // the sequence starts with it.
  WindowTokens w;
  w.n_tokens = tokens.size();
  w.next_seq = next_seq;
  std::optional<std::size_t> head_end;
  if (n_system > 0 && window[n_system - 1].token_end) head_end = *window[n_system - 1].token_end;
  if (!head_end) {
    auto head = head_tokens(model, tok, system_chat, chat);
    if (!head) return head.error();
    if (head->size() <= tokens.size() && std::equal(head->begin(), head->end(), tokens.begin())) head_end = head->size();
  }
  for (const auto& m : window) w.messages.push_back({m.seq, m.role == "system", m.role == "user", m.token_end});
  w.head_end = head_end.value_or(0);
  if (!head_end || !boundaries_known(w)) {
    // Boundaries unknown (rows from schema 1, a template that renders the system prompt with what
    // follows): re-derive the window's tokens with their boundaries, then cut those.
    auto derived = derive_window(model, tok, chat_msgs, chat);
    if (!derived) return derived.error();
    tokens = std::move(derived->tokens);
    w.n_tokens = tokens.size();
    for (std::size_t i = 0; i < window.size(); ++i) w.messages[i].token_end = derived->ends[i];
    w.head_end = n_system > 0 ? derived->ends[n_system - 1] : (tok.adds_bos() ? 1 : 0);
    plan.rederived = true;
    if (!boundaries_known(w)) return Error(Errc::internal, "the session's window could not be re-derived with its message boundaries");
  }
  auto drop = plan_drop(w, input->size(), max_seq_len, target, "content");
  if (!drop) return drop.error();
  const std::size_t removed = drop->cut - w.head_end;
  if (policy == Overflow::sliding && !plan.rederived && removed > 0) {
    plan.slide = Slide{tokens, 0, w.head_end, drop->cut};
  }
  std::vector<engine::Token> history(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(w.head_end));
  history.insert(history.end(), tokens.begin() + static_cast<std::ptrdiff_t>(drop->cut), tokens.end());
  std::vector<kvstore::MessageRecord> kept;
  for (std::size_t i = 0; i < window.size(); ++i) {
    if (w.messages[i].system) {
      plan.change.token_ends[window[i].seq] = static_cast<std::uint32_t>(w.head_end);
      kept.push_back(window[i]);
    } else if (window[i].seq >= drop->first_message) {
      plan.change.token_ends[window[i].seq] = static_cast<std::uint32_t>(*w.messages[i].token_end - removed);
      kept.push_back(window[i]);
    } else {
      plan.change.token_ends.erase(window[i].seq);  // it left the window (the closing's end, if set)
    }
  }
  // The new message as it follows the kept ones (the same tokens for a template that renders a
  // conversation prefix-stably).
  auto kept_input = turn_tokens(model, tok, chat_of_records(kept), history.size(), added, chat);
  if (!kept_input) return kept_input.error();
  plan.change.tokens = history;
  plan.change.first_message = drop->first_message;
  // Tokens that left the window (a re-derivation is not a drop: what it dropped is what the
  // re-derived window held, not the stored one).
  plan.change.dropped_tokens = removed;
  plan.report = {true, removed, drop->dropped_messages, drop->first_message};
  plan.history = std::move(history);
  plan.input = std::move(*kept_input);
  plan.user_token_end = static_cast<std::uint32_t>(plan.history.size() + plan.input.size());
  return plan;
}

}  // namespace llmd::core
