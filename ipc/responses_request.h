// The request side of OpenAI's Responses API (POST /v1/responses, see api.h): the fields it takes
// (any other is a 400 naming it), input items as chat messages, Responses' flat function tools,
// tool_choice and text.format translated to the chat options, and the ids of stored responses.
//
// A stored response is a turn of a session (api_responses.cpp): its id names the session and how
// many of the session's messages lead up to its answer, so it survives a restart and its owner is
// the session's.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "core/service.h"

namespace llmd::ipc {

struct ResponsesRequest {
  // params (temperature, top_p, max_output_tokens as max_tokens, llmd's seed/top_k/min_p/ignore_eos),
  // priority, app, and chat: tools, tool_choice, parallel_tool_calls, text.format's JSON schema.
  core::TurnRequest turn;
  std::vector<engine::ChatMessage> input;  // the input items as chat messages (never empty)
  std::optional<std::string> instructions;
  std::optional<std::string> previous_response_id;
  std::optional<bool> store;  // unset: store when the request can be a session turn
  bool stream = false;
  // What a response object repeats of its request: instructions, tools, tool_choice,
  // parallel_tool_calls, text, temperature, top_p, max_output_tokens, metadata, user.
  nlohmann::json echo;
};

// The fields of POST /v1/responses (check_fields): input, instructions, tools, tool_choice,
// parallel_tool_calls, text, max_output_tokens, temperature, top_p, stream, previous_response_id,
// store, metadata, user, model, and llmd's seed, top_k, min_p, ignore_eos, priority, app.
extern const std::initializer_list<std::string_view> kResponsesFields;

// The request, checked: invalid_argument naming the field (param) for anything else, as
// check_fields and read_chat_options do. input: a string (one user message) or a non-empty array
// of items: messages {role: user | system | developer | assistant, content: a string or
// [{type: input_text | output_text, text}]}, function_call {call_id, name, arguments} and
// function_call_output {call_id, output}; items may carry their id and status (as a response's
// output is fed back). Consecutive function calls join the assistant message before them.
Result<ResponsesRequest> read_responses_request(const nlohmann::json& body, const core::ServiceLimits& limits,
                                                std::uint32_t max_session_tokens);

// Why the request cannot be a session turn (which takes one user message as text, or, with a
// previous_response_id, only function_call_output items: the tool results of its calls): the param
// to name ("input"), or "" when it can. Tools and text.format go with a session turn.
std::string unstorable_param(const ResponsesRequest& request);

// A stored response: the session and the number of its messages up to the response's answer
// (GET /v1/sessions/{id} lists them; the answer is the last of them).
struct StoredResponseRef {
  std::string session_id;
  std::size_t n_messages = 0;
};
// "resp_" + the session id's hex digits + "_" + n_messages.
std::string stored_response_id(const StoredResponseRef& ref);
// The ref a stored response id names; nullopt for any other string (a response that was not
// stored has an id without the "_N" suffix).
std::optional<StoredResponseRef> parse_response_id(const std::string& id);

}  // namespace llmd::ipc
