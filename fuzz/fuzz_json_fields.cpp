// Fuzz target: the typed JSON request fields, the generation options and the OpenAI chat fields
// (ipc/json_fields.h, ipc/turn_options.h, ipc/chat_request.h: strict field lists, messages with tool
// calls, tools, tool_choice, response_format, n, logprobs, stream_options) on arbitrary JSON
// documents, and llmd's generic answer parser (engine::parse_answer) on the same bytes.
//
// The input is a request body. It goes through parse_object as the API reads bodies; an object
// is read field by field the way the generating endpoints read it. Any other JSON value (a
// number, an array, ...) becomes the value of every known field at once, so odd values reach each
// typed reader. Properties: nothing throws; every error is invalid_argument with a message and
// maps to a 400 whose body has the OpenAI error shape; accepted options are within their ranges.
#include <cmath>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/service.h"
#include "fuzz/fuzz_util.h"
#include "engine/chat_template.h"
#include "ipc/api_errors.h"
#include "ipc/chat_request.h"
#include "ipc/json_fields.h"
#include "ipc/turn_options.h"

namespace {

using llmd::Errc;
using llmd::Error;

constexpr const char* kFields[] = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                                   "min_p", "seed", "stop", "repeat_penalty", "repetition_penalty",
                                   "ignore_eos", "priority", "app", "stream", "prompt", "content",
                                   "session", "system_prompt", "messages", "tools", "tool_choice",
                                   "parallel_tool_calls", "response_format", "grammar", "logprobs",
                                   "top_logprobs", "n", "stream_options", "logit_bias", "presence_penalty",
                                   "frequency_penalty"};

// A rejected field is the caller's fault: invalid_argument, a message, and a 400 in the error shape.
void check_rejection(const Error& e) {
  FUZZ_CHECK(e.code() == Errc::invalid_argument, "a request field error that is not invalid_argument: " + e.to_string());
  FUZZ_CHECK(!e.message().empty(), "an error without a message");
  const auto h = llmd::ipc::to_http_error(e);
  FUZZ_CHECK(h.status == 400, "a field error answered " + std::to_string(h.status) + ": " + e.to_string());
  const auto wire = nlohmann::json::parse(llmd::ipc::to_wire(h.body), nullptr, false);
  FUZZ_CHECK(wire.is_object() && wire.contains("error") && wire["error"]["message"].is_string() &&
                 wire["error"]["type"].is_string() && wire["error"]["code"].is_string(),
             "an error body without the error shape: " + llmd::ipc::to_wire(h.body));
}

void check_options(const nlohmann::json& obj) {
  using namespace llmd::ipc;
  // Each typed reader alone, on every field.
  for (const char* key : kFields) {
    if (auto s = opt_string(obj, key); !s) check_rejection(s.error());
    if (auto b = opt_bool(obj, key); !b) check_rejection(b.error());
    if (auto i = opt_int(obj, key, -5, 1000); !i) {
      check_rejection(i.error());
    } else if (*i) {
      FUZZ_CHECK(**i >= -5 && **i <= 1000, std::string(key) + " out of range: " + std::to_string(**i));
    }
    if (auto d = opt_number(obj, key, 0.0, 2.0); !d) {
      check_rejection(d.error());
    } else if (*d) {
      FUZZ_CHECK(std::isfinite(**d) && **d >= 0.0 && **d <= 2.0, std::string(key) + " out of range");
    }
  }
  // The generation options as every generating endpoint (and D-Bus Generate) reads them.
  llmd::core::ServiceLimits limits;
  limits.default_max_tokens = 16;
  llmd::core::TurnRequest turn;
  const auto st = read_turn_options(obj, limits, 512, turn);
  if (!st) {
    check_rejection(st.error());
    return;
  }
  const auto& p = turn.params;
  // The chat fields, as /v1/chat/completions reads them after the generation options.
  if (auto c = check_fields(obj, kChatFields, "/v1/chat/completions"); !c) check_rejection(c.error());
  if (auto m = obj.find("messages"); m != obj.end()) {
    std::vector<llmd::engine::ChatMessage> msgs;
    if (auto c = read_chat_messages(*m, msgs); !c) check_rejection(c.error());
  }
  llmd::engine::ChatOptions chat;
  if (auto c = read_chat_options(obj, chat); !c) {
    check_rejection(c.error());
  } else {
    FUZZ_CHECK(chat.tool_choice != llmd::engine::ToolChoice::function || obj.contains("tool_choice"),
               "a named tool_choice from nowhere");
  }
  llmd::ipc::StreamOptions so;
  llmd::core::TurnRequest out = turn;
  const auto stream_field = obj.find("stream");
  const bool streamed = stream_field != obj.end() && *stream_field == true;
  if (auto c = read_output_options(obj, true, streamed, out, so); !c) {
    check_rejection(c.error());
  } else {
    FUZZ_CHECK(so.n >= 1 && so.n <= llmd::ipc::kMaxChoices, "n accepted out of range");
    FUZZ_CHECK(out.params.top_logprobs >= -1 && out.params.top_logprobs <= llmd::engine::kMaxTopLogprobs,
               "top_logprobs accepted out of range");
  }
  FUZZ_CHECK(p.max_tokens >= 1 && p.max_tokens <= 512, "max_tokens accepted out of range: " + std::to_string(p.max_tokens));
  FUZZ_CHECK(llmd::engine::validate_generate(p).ok(), "accepted options that validate_generate refuses");
  FUZZ_CHECK(std::isfinite(p.sampling.temperature) && std::isfinite(p.sampling.top_p) &&
                 std::isfinite(p.sampling.min_p) && std::isfinite(p.sampling.repeat_penalty),
             "a non-finite sampling value was accepted");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  // A model's answer in llmd's generic tool-call format: whatever it is, it parses to something,
  // and a partial reading never shows text that a whole one would not.
  llmd::engine::AnswerSyntax generic;
  generic.kind = llmd::engine::AnswerSyntax::Kind::generic;
  generic.tools = true;
  const auto whole = llmd::engine::parse_answer(generic, body, false);
  const auto partial = llmd::engine::parse_answer(generic, body, true);
  FUZZ_CHECK(partial.content.empty() || partial.content == whole.content, "a partial reading shows other text");
  for (const auto& c : whole.tool_calls) FUZZ_CHECK(!c.name.empty() && !c.id.empty(), "a tool call without a name or id");
  auto obj = llmd::ipc::parse_object(body);
  if (obj) {
    check_options(*obj);
    return 0;
  }
  check_rejection(obj.error());
  // Not an object: as the value of every field.
  const auto value = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return 0;
  nlohmann::json fields = nlohmann::json::object();
  for (const char* key : kFields) fields[key] = value;
  check_options(fields);
  return 0;
}
