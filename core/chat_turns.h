// How requests become tokens, and how many fit a sequence of the context.
//
// A session's durable token sequence grows turn by turn: tokens(turn) = tokenize(F(all messages +
// new user message, open assistant turn) minus F(messages already in the tokens)), where F is the
// chat template (engine::apply_chat_template). The assistant's reply is appended as the tokens the
// model generated, so the sequence is always exactly what the KV cache holds. (Consequence: a
// reply cut by max_tokens or a stop string lacks the template's end-of-turn marker in the tokens;
// the next turn's text starts where the template's rendering of the finished messages ends.)
//
// A session with tools (SessionRecord::tools) renders every part of its sequence with them: the
// `chat` options below carry the tools (tool_choice automatic, nothing else), so the prompt's
// description of the tools is in the sequence as the template puts it. A turn may also bring the
// results of the tools its last answer called (role "tool") instead of a user message.
//
// Thread-safety: pure functions over an immutable Model and Tokenizer; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/chat_template.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace llmd::core {

// The tokens a new user message adds to a session. `messages` are the session's messages so far;
// `history_tokens` is how many tokens the session holds (0: its messages are not in the tokens
// yet, e.g. a new session with only a system prompt, and the text starts with BOS).
Result<std::vector<engine::Token>> turn_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                               std::span<const engine::ChatMessage> messages,
                                               std::size_t history_tokens, const std::string& user_message,
                                               const engine::ChatOptions& chat = {});
// The same for the messages a turn adds (a user message, or the results of tool calls).
Result<std::vector<engine::Token>> turn_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                               std::span<const engine::ChatMessage> messages,
                                               std::size_t history_tokens, std::span<const engine::ChatMessage> added,
                                               const engine::ChatOptions& chat = {});

// What the template writes after the last answer of `messages` (an assistant message last) that
// `tokens`, the session's sequence ending with that answer's generated tokens, does not hold yet:
// the answer's closing ("<|im_end|>\n" for ChatML). An answer cut by max_tokens generated none of
// it; one ended by an end-of-generation token generated its start (that token's text is taken off).
// Empty when the sequence already ends with it, when the last message is not an assistant's, or
// when the template does not render an answer as its text followed by a closing. A session turn
// puts it in the history before its message (plan_session_turn), so the sequence is the one a
// client resending the conversation would send (turn_tokens starts after it).
Result<std::vector<engine::Token>> answer_closing(const engine::Model& model, const engine::Tokenizer& tok,
                                                  std::span<const engine::ChatMessage> messages,
                                                  std::span<const engine::Token> tokens,
                                                  const engine::ChatOptions& chat = {});

// The whole conversation as tokens (a model change re-derives a session's tokens from its
// messages; chat completions without a session). add_assistant opens an assistant turn.
Result<std::vector<engine::Token>> conversation_tokens(const engine::Model& model, const engine::Tokenizer& tok,
                                                       std::span<const engine::ChatMessage> messages,
                                                       bool add_assistant, const engine::ChatOptions& chat = {});

// Where a session's first `keep` messages end in its token sequence (a rewind cuts it there):
// `messages` are all of its messages, `tokens` its stored sequence, and messages[keep] (a user
// message) starts the first turn that is dropped. Each turn's prompt tokens are re-derived
// (turn_tokens, deterministic) and located in the sequence in order: turn 1's at position 0, each
// later one after the previous turn's prompt and at least one generated token. The answer is the
// position where the first dropped turn's prompt starts: exactly the sequence the session had
// after its last kept turn (generated tokens included, as the KV holds them). nullopt when the
// sequence does not have that shape (tokens of another model, or re-derived from the messages):
// the caller then keeps no tokens and the next turn renders the kept messages afresh.
std::optional<std::size_t> turn_boundary(const engine::Model& model, const engine::Tokenizer& tok,
                                         std::span<const engine::ChatMessage> messages,
                                         std::span<const engine::Token> tokens, std::size_t keep,
                                         const engine::ChatOptions& chat = {});

// A plain completion prompt (BOS as the model wants, special tokens not parsed).
Result<std::vector<engine::Token>> prompt_tokens(const engine::Tokenizer& tok, const std::string& prompt);

// The one rule for what fits a sequence of max_seq_len cells (the Service checks a request with
// it before the request is queued, the engine worker each job before it takes a slot):
//   turn   history + input + 1 <= max_seq_len: a cell is left for the first generated token;
//   audit  history + input <= max_seq_len: it only recomputes a stored history, which may fill a
//          whole sequence (one cell more than a turn may bring).
// Else invalid_argument with Reason::context_length_exceeded, limit max_seq_len, actual
// history + input and param `param` (the request field that brought the tokens: "messages",
// "prompt", "content"; "" if unknown), the message "context_length_exceeded: the prompt has N
// tokens; the context holds M" (or "the session holds H tokens and the message adds N").
enum class SeqUse { turn, audit };
Status check_context(std::size_t history, std::size_t input, std::uint32_t max_seq_len, SeqUse use,
                     std::string param = {});

// The most tokens a session may have stored: a turn that filled its sequence ends with one
// sampled token beyond it, which no KV was computed for (finish "context_full").
inline std::size_t max_stored_tokens(std::uint32_t max_seq_len) { return std::size_t{max_seq_len} + 1; }

}  // namespace llmd::core
