// The model's window over a conversation that outgrows its context: the overflow policies, what a
// turn reports about its window, and where the window moves to.
//
// A session's transcript in the session store is whole forever; its token sequence (and so its
// KV) holds only the window: the system prompt and the most recent messages from
// window_first_message on (kvstore/session_store.h). When a turn would not fit, the policy says
// what happens:
//   error        the turn is refused: 400 context_length_exceeded (llmd's behaviour before).
//   drop_oldest  the oldest whole turns leave the window until the system prompt, the turns kept
//                and the new message fit the fill target (context-fill-target, a share of the
//                sequence): the stored tokens become the system prompt's tokens + the kept turns'
//                tokens, cut token-exactly from the old sequence at message boundaries
//                (messages.token_end). The KV of the system prompt is reused by the prefix
//                machinery (slot common prefix, chunk hashes); the rest is recomputed once. Only a
//                message that cannot fit even alone (after the system prompt) is refused.
//   sliding      StreamingLLM-style: the window moves exactly as under drop_oldest (the system
//                prompt stays as the attention sink, the oldest whole turns leave), but the kept
//                turns' KV is not recomputed: their positions are shifted down in the KV
//                (llama.cpp's K-shift; Job::Slide), from the session's slot or its chunks. So
//                the kept tokens' KV still reflects what they attended to before the move (what
//                StreamingLLM does), it costs no prefill, and it is not what a prefill of the
//                window gives: the session's KV gets a new lineage (kvstore ChunkStore::
//                lineage_seed), committed with the turn, and its chunks match only that. Where
//                the KV from before the move cannot be had (evicted everywhere, stranded by a
//                smaller context, boundaries re-derived) the window is recomputed as under
//                drop_oldest. Sessions only: a stateless request keeps no KV between calls to
//                shift (400 naming overflow).
//
// When the window moves: before a turn whose prompt plus room for its answer would not fit
// (history + input + min(max_tokens, context - fill target) > context). So an answer is not cut
// by the context unless it asks for more than the fill target leaves.
//
// The plan (plan_drop) is pure logic over token counts and message boundaries; the functions that
// tokenise (derive_window, head_tokens, drop_oldest_chat) run on the storage thread.
//
// Thread-safety: pure functions (the tokenising ones over an immutable Model and Tokenizer); any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/job.h"
#include "engine/chat_template.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "kvstore/session_store.h"

namespace llmd::core {

enum class Overflow { error, drop_oldest, sliding };

// "error", "drop_oldest", "sliding".
std::string_view overflow_name(Overflow o);
// The policy a name gives, else invalid_argument naming `param` and the accepted names.
Result<Overflow> parse_overflow(std::string_view name, std::string param = "overflow");
// The policy a stateless request may ask for: sliding is unsupported (400) there, naming param.
Status check_stateless_overflow(Overflow o, std::string param = "overflow");

// The defaults: context-overflow and context-fill-target.
struct WindowConfig {
  Overflow overflow = Overflow::drop_oldest;
  // After a move, the window (system prompt + kept turns + the new message) holds at most this
  // share of the sequence, in percent (10-100). Why 50: a move recomputes the kept turns once;
  // with a target f the window then grows by (1 - f) of the context before the next move, so
  // the recompute per token added is about f / (1 - f): 1x at 50%, 3x at 75%, 9x at 90%. Half the
  // context kept as conversation, and the prompt cost at most doubled on average.
  std::uint32_t fill_target_percent = 50;
};

// What a turn did to its window (TurnResult::window; the front ends report it).
struct WindowReport {
  bool moved = false;                 // messages left the window before this turn
  std::uint64_t dropped_tokens = 0;   // tokens that left it, this turn
  std::uint32_t dropped_messages = 0; // messages that left it, this turn
  // The first non-system message in the window after the turn: its seq in a session; its index in
  // the request's messages for a stateless chat. (0 when nothing was ever dropped.)
  std::int64_t first_message = 0;
};

// The most tokens the window may hold after a move: fill_target_percent of max_seq_len.
std::size_t fill_target_tokens(std::uint32_t max_seq_len, std::uint32_t fill_target_percent);
// Room kept for the answer when deciding whether to move: min(max_tokens, max_seq_len - target), at least 1.
std::size_t answer_room(std::int32_t max_tokens, std::uint32_t max_seq_len, std::size_t target);
// Whether a turn of `history` + `input` tokens must move the window first.
bool must_move(std::size_t history, std::size_t input, std::uint32_t max_seq_len, std::size_t room);

// A message of the window, for the plan.
struct WindowMessage {
  std::int64_t seq = 0;
  bool system = false;
  bool user = false;
  std::optional<std::uint32_t> token_end;  // where its tokens end in the sequence
};

// The window as the plan sees it: its messages in order (the system prompt's first), how many
// tokens the system prompt's head takes (BOS + its rendering), the sequence's length and the seq
// the next message will get.
struct WindowTokens {
  std::vector<WindowMessage> messages;
  std::size_t head_end = 0;
  std::size_t n_tokens = 0;
  std::int64_t next_seq = 0;
};

// Every non-system message has a token_end, they increase, the first is past head_end and the
// last is n_tokens: the sequence can be cut at any message boundary.
bool boundaries_known(const WindowTokens& w);

struct DropPlan {
  std::size_t cut = 0;               // tokens [head_end, cut) leave the window
  std::int64_t first_message = 0;    // the first kept non-system message (next_seq: none kept)
  std::uint32_t dropped_messages = 0;
};

// drop_oldest: keeps the most recent whole turns (a turn starts at a user message) such that
// head_end + kept + input <= target, dropping at least one turn; keeps none if no turn fits. Needs
// boundaries_known(w). invalid_argument (Reason::context_length_exceeded, param `param`, limit
// max_seq_len, actual head_end + input) if the message does not fit even alone:
// head_end + input + 1 > max_seq_len.
Result<DropPlan> plan_drop(const WindowTokens& w, std::size_t input, std::uint32_t max_seq_len, std::size_t target,
                           const std::string& param);

// The tokens of a window's head: BOS (as the model wants) and the template's rendering of the
// leading system messages (none: BOS alone).
Result<std::vector<engine::Token>> head_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                               std::span<const engine::ChatMessage> system_messages,
                                               const engine::ChatOptions& chat = {});

// A window's tokens re-derived from its messages as turns build them (the head; each user or
// tool message as the text the template adds for it, the opening of the answer included after
// the last one before an answer; each assistant message as the text the template adds for it),
// with where each message's tokens end (`ends`, one per message; the leading system messages end
// at the head's end).
struct DerivedWindow {
  std::vector<engine::Token> tokens;
  std::vector<std::uint32_t> ends;
};
Result<DerivedWindow> derive_window(const engine::Model& model, const engine::Tokenizer& tok,
                                    std::span<const engine::ChatMessage> messages,
                                    const engine::ChatOptions& chat = {});

// A stateless chat that does not fit: the leading system messages and the most recent whole turns
// (rendered with the request's `chat` options: its tools and format stay in the prompt)
// whose tokens (with the answer opened) fit `target`, keeping at least the last user message and
// what follows it. `tokens` is the whole conversation's (add_assistant). Returns the kept messages'
// tokens and the report (first_message: index in `messages`); invalid_argument
// (context_length_exceeded, param "messages") if the last message does not fit even alone.
struct ChatDrop {
  std::vector<engine::Token> tokens;
  WindowReport report;
};
Result<ChatDrop> drop_oldest_chat(const engine::Model& model, const engine::Tokenizer& tok,
                                  std::span<const engine::ChatMessage> messages, std::size_t full_tokens,
                                  std::uint32_t max_seq_len, std::size_t target, const engine::ChatOptions& chat = {});

// The session's messages the window holds: the system messages and those from first_message on.
std::vector<kvstore::MessageRecord> window_messages(const kvstore::SessionRecord& session,
                                                    const std::vector<kvstore::MessageRecord>& messages);

// A session turn's tokens and what it does to the window (storage thread, Service::prepare).
struct SessionTurnPlan {
  std::vector<engine::Token> history;  // the window the turn builds on (the stored tokens, or the moved window)
  std::vector<engine::Token> input;    // the new user message's tokens
  std::uint32_t user_token_end = 0;    // where the turn's messages' tokens end (history + input)
  // Committed with the turn (SessionStore::append_turn): a moved window's tokens, first message,
  // dropped tokens and the kept messages' new offsets; the system prompt's offset once known.
  kvstore::WindowChange change;
  WindowReport report;
  bool rederived = false;  // the boundaries were unknown: the window was re-derived from its messages
  std::size_t closing = 0;  // tokens of the last answer's closing added to the history (answer_closing)
  // Under sliding, a move of the stored window (not re-derived): from = the stored tokens, head
  // and cut as the move made them; from_lineage is the caller's to fill.
  std::optional<Slide> slide;
};

// Plans a session turn: the window's messages (window_messages) with their token_end, the stored
// tokens (whole and of this model), the messages the turn adds (a user message, or tool results),
// the session's tools (`chat`). Under drop_oldest, a turn that must_move
// drops the oldest whole turns (plan_drop), cutting the stored tokens at message boundaries, or
// re-derives the window first where those are unknown. Under sliding, the same move, and `slide`
// says how to shift the stored KV to it. Under error the window never moves; the caller checks
// the context (check_context) as before.
// Errors: those of plan_drop (a message that does not fit alone), of the template and tokenizer.
Result<SessionTurnPlan> plan_session_turn(const engine::Model& model, const engine::Tokenizer& tok,
                                          std::vector<kvstore::MessageRecord> window, std::int64_t first_message,
                                          std::int64_t next_seq, std::vector<engine::Token> tokens,
                                          std::span<const engine::ChatMessage> added, std::uint32_t max_seq_len,
                                          Overflow policy, std::size_t target, std::int32_t max_tokens,
                                          const engine::ChatOptions& chat = {});

}  // namespace llmd::core
