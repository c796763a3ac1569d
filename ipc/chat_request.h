// The OpenAI request fields beyond the generation options (turn_options.h): which fields each
// endpoint takes (any other is a 400 naming it — never ignored), chat messages with tool calls and
// tool results, tools and tool_choice, response_format and llama.cpp's grammar, log-probabilities,
// n and stream_options.
//
// Advisory fields, accepted and not acted on: "model" (llmd serves one model), "user", "metadata",
// "store" (nothing is stored for OpenAI's dashboards; sessions are llmd's own).
#pragma once

#include <initializer_list>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "core/service.h"

namespace llmd::ipc {

// invalid_argument naming the first field of `body` that is neither in `fields` nor advisory:
// "FIELD is not supported by ENDPOINT".
Status check_fields(const nlohmann::json& body, std::initializer_list<std::string_view> fields, std::string_view endpoint);

// The fields each generating endpoint takes (check_fields).
extern const std::initializer_list<std::string_view> kChatFields;
extern const std::initializer_list<std::string_view> kCompletionFields;
extern const std::initializer_list<std::string_view> kMessageFields;

// `messages` of a chat completion: role (system, developer = system, user, assistant, tool),
// content (a string, an array of text parts, or null for an assistant that only calls tools),
// an assistant's tool_calls, a tool message's tool_call_id and name. invalid_argument naming
// "messages" for anything else.
Status read_chat_messages(const nlohmann::json& messages, std::vector<engine::ChatMessage>& out);

// tools, tool_choice, parallel_tool_calls, response_format ({"type": "text" | "json_object" |
// "json_schema", "json_schema": {"name", "schema", "strict", "description"}}) and grammar (GBNF,
// llama.cpp's extension) into `chat`.
Status read_chat_options(const nlohmann::json& body, engine::ChatOptions& chat);
// A session turn's tool parts: `tools` (present, even empty: the session's tools from this turn
// on; its tool_choice and parallel_tool_calls are the turn's) and `tool_results` (POST
// /v1/sessions/{id}/messages: [{"tool_call_id", "content"}], instead of content).
Status read_session_tools(const nlohmann::json& body, core::TurnRequest& turn);

// The most choices one request may ask for (n): each is a turn of its own, counted against the
// caller's requests in flight.
inline constexpr std::int64_t kMaxChoices = 16;

// What a stream asks for beyond its events.
struct StreamOptions {
  bool include_usage = false;  // a last chunk with "choices": [] and the usage
  std::uint32_t n = 1;         // choices (n): that many turns of the request side by side
};

// n (1 to kMaxChoices; a session turn takes only 1), logprobs and top_logprobs (chat: a boolean and 0-20; completion: an integer 0-5),
// stream_options (only with stream: true).
Status read_output_options(const nlohmann::json& body, bool chat, bool stream, core::TurnRequest& turn,
                           StreamOptions& stream_options);

}  // namespace llmd::ipc
