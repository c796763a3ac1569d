// The request side of the Responses API (see responses_request.h).
#include "ipc/responses_request.h"

#include <algorithm>
#include <cctype>

#include "ipc/chat_request.h"
#include "ipc/json_fields.h"
#include "ipc/turn_options.h"

namespace llmd::ipc {
namespace {

using nlohmann::json;

Error bad(const std::string& param, const std::string& what) {
  return Error(Errc::invalid_argument, what).with_param(param);
}

Status only_keys(const json& obj, std::initializer_list<std::string_view> keys, const std::string& param,
                 const std::string& what) {
  for (const auto& [k, v] : obj.items()) {
    bool known = false;
    for (auto key : keys) known = known || k == key;
    if (!known) return bad(param, param + ": \"" + k + "\" is not supported in " + what);
  }
  return {};
}

Result<std::string> string_of(const json& obj, const char* key, const std::string& what, bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return bad("input", "input: " + what + " needs " + key);
    return std::string();
  }
  if (!it->is_string()) return bad("input", "input: " + what + "'s " + key + " must be a string");
  return it->get<std::string>();
}

// An error of the chat completions' reader about `from` told under the Responses name `to`.
Error renamed(const Error& e, const std::string& from, const std::string& to) {
  if (e.param() != from) return e;
  std::string message = e.message();
  for (std::size_t at = message.find(from); at != std::string::npos; at = message.find(from, at + to.size())) {
    message.replace(at, from.size(), to);
  }
  return Error(e.code(), std::move(message), e.detail()).with_param(to);
}

// A message item's content: a string or text parts (input_text, output_text).
Result<std::string> content_of(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return bad("input", "input: a message's content must be a string or an array of text parts");
  std::string out;
  for (const auto& part : content) {
    if (!part.is_object()) return bad("input", "input: each content part must be an object");
    const std::string type = part.value("type", "");
    if (type != "input_text" && type != "output_text") {
      return bad("input", "input: content parts of type \"" + type + "\" are not supported (only input_text and output_text)");
    }
    LLMD_TRY_STATUS(only_keys(part, {"type", "text", "annotations", "logprobs"}, "input", "a text part"));
    auto text = part.find("text");
    if (text == part.end() || !text->is_string()) return bad("input", "input: a text part needs a text string");
    out += text->get<std::string>();
  }
  return out;
}

Status read_input(const json& input, std::vector<engine::ChatMessage>& out) {
  if (input.is_string()) {
    out.push_back({"user", input.get<std::string>()});
    return {};
  }
  if (!input.is_array() || input.empty()) return bad("input", "input must be a string or a non-empty array of items");
  for (const auto& item : input) {
    if (!item.is_object()) return bad("input", "input: each item must be an object");
    auto type_it = item.find("type");
    if (type_it != item.end() && !type_it->is_string()) return bad("input", "input: an item's type must be a string");
    const std::string type = type_it == item.end() ? "message" : type_it->get<std::string>();
    if (type == "message") {
      LLMD_TRY_STATUS(only_keys(item, {"type", "role", "content", "id", "status"}, "input", "a message item"));
      auto role = string_of(item, "role", "a message", true);
      if (!role) return role.error();
      engine::ChatMessage m;
      m.role = *role == "developer" ? "system" : *role;
      if (m.role != "user" && m.role != "system" && m.role != "assistant") {
        return bad("input", "input: unknown role \"" + *role + "\" (user, system, developer or assistant)");
      }
      auto content = item.find("content");
      if (content == item.end()) return bad("input", "input: a message needs a content");
      auto text = content_of(*content);
      if (!text) return text.error();
      m.content = std::move(*text);
      out.push_back(std::move(m));
    } else if (type == "function_call") {
      LLMD_TRY_STATUS(only_keys(item, {"type", "id", "call_id", "name", "arguments", "status"}, "input",
                                "a function_call item"));
      engine::ToolCall call;
      auto id = string_of(item, "call_id", "a function_call", true);
      if (!id) return id.error();
      auto name = string_of(item, "name", "a function_call", true);
      if (!name) return name.error();
      auto args = string_of(item, "arguments", "a function_call", true);
      if (!args) return args.error();
      call.id = std::move(*id);
      call.name = std::move(*name);
      call.arguments = std::move(*args);
      // One assistant turn: its text (if any) and its calls.
      if (out.empty() || out.back().role != "assistant") out.push_back({"assistant", ""});
      out.back().tool_calls.push_back(std::move(call));
    } else if (type == "function_call_output") {
      LLMD_TRY_STATUS(only_keys(item, {"type", "id", "call_id", "output", "status"}, "input",
                                "a function_call_output item"));
      auto id = string_of(item, "call_id", "a function_call_output", true);
      if (!id) return id.error();
      auto output = item.find("output");
      if (output == item.end()) return bad("input", "input: a function_call_output needs output");
      auto text = content_of(*output);
      if (!text) return text.error();
      engine::ChatMessage m{"tool", std::move(*text)};
      m.tool_call_id = *id;
      for (const auto& earlier : out) {
        for (const auto& c : earlier.tool_calls) {
          if (c.id == *id) m.name = c.name;
        }
      }
      out.push_back(std::move(m));
    } else {
      return bad("input", "input: items of type \"" + type +
                              "\" are not supported (message, function_call and function_call_output are)");
    }
  }
  return {};
}

// Responses' tools, tool_choice and text.format in chat completions' shapes, for read_chat_options.
Result<json> chat_options_of(const json& body) {
  json chat = json::object();
  if (auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) return bad("tools", "tools must be an array");
    json out = json::array();
    for (const auto& t : *tools) {
      if (!t.is_object()) return bad("tools", "each tool must be an object");
      const std::string type = t.value("type", "");
      if (type != "function") {
        return bad("tools", "tools of type \"" + type + "\" are not supported (only \"function\")");
      }
      LLMD_TRY_STATUS(only_keys(t, {"type", "name", "description", "parameters", "strict"}, "tools", "a function tool"));
      json f = t;
      f.erase("type");
      out.push_back({{"type", "function"}, {"function", std::move(f)}});
    }
    chat["tools"] = std::move(out);
  }
  if (auto c = body.find("tool_choice"); c != body.end() && !c->is_null()) {
    if (c->is_object()) {
      LLMD_TRY_STATUS(only_keys(*c, {"type", "name"}, "tool_choice", "tool_choice"));
      if (c->value("type", "") != "function" || !c->contains("name")) {
        return bad("tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}");
      }
      chat["tool_choice"] = {{"type", "function"}, {"function", {{"name", (*c)["name"]}}}};
    } else {
      chat["tool_choice"] = *c;
    }
  }
  if (auto p = body.find("parallel_tool_calls"); p != body.end()) chat["parallel_tool_calls"] = *p;
  if (auto text = body.find("text"); text != body.end() && !text->is_null()) {
    if (!text->is_object()) return bad("text", "text must be an object");
    LLMD_TRY_STATUS(only_keys(*text, {"format"}, "text", "text"));
    if (auto f = text->find("format"); f != text->end() && !f->is_null()) {
      if (!f->is_object()) return bad("text", "text.format must be an object");
      const std::string type = f->value("type", "");
      if (type == "json_schema") {
        LLMD_TRY_STATUS(only_keys(*f, {"type", "name", "schema", "strict", "description"}, "text", "text.format"));
        json js = *f;
        js.erase("type");
        chat["response_format"] = {{"type", "json_schema"}, {"json_schema", std::move(js)}};
      } else if (type == "json_object" || type == "text") {
        LLMD_TRY_STATUS(only_keys(*f, {"type"}, "text", "text.format of type " + type));
        chat["response_format"] = {{"type", type}};
      } else {
        return bad("text", "text.format.type must be \"text\", \"json_object\" or \"json_schema\"");
      }
    }
  }
  return chat;
}

}  // namespace

const std::initializer_list<std::string_view> kResponsesFields = {
    "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "max_output_tokens",
    "temperature", "top_p", "stream", "previous_response_id", "store", "seed", "top_k", "min_p", "ignore_eos", "priority",
    "app"};

Result<ResponsesRequest> read_responses_request(const json& body, const core::ServiceLimits& limits,
                                                std::uint32_t max_session_tokens) {
  LLMD_TRY_STATUS(check_fields(body, kResponsesFields, "/v1/responses"));
  ResponsesRequest req;
  req.turn.kind = core::TurnRequest::Kind::chat;
  auto input = body.find("input");
  if (input == body.end() || input->is_null()) return bad("input", "input is required");
  LLMD_TRY_STATUS(read_input(*input, req.input));

  // The generation options under chat completions' names (read_turn_options), errors renamed back.
  json gen = json::object();
  for (const char* key : {"temperature", "top_p", "seed", "top_k", "min_p", "ignore_eos", "priority", "app"}) {
    if (auto it = body.find(key); it != body.end()) gen[key] = *it;
  }
  if (auto it = body.find("max_output_tokens"); it != body.end()) gen["max_tokens"] = *it;
  if (auto st = read_turn_options(gen, limits, max_session_tokens, req.turn); !st) {
    return renamed(st.error(), "max_tokens", "max_output_tokens");
  }
  auto chat = chat_options_of(body);
  if (!chat) return chat.error();
  if (auto st = read_chat_options(*chat, req.turn.chat); !st) return renamed(st.error(), "response_format", "text");

  auto instructions = opt_string(body, "instructions");
  if (!instructions) return instructions.error();
  req.instructions = std::move(*instructions);
  auto previous = opt_string(body, "previous_response_id");
  if (!previous) return previous.error();
  req.previous_response_id = std::move(*previous);
  auto store = opt_bool(body, "store");
  if (!store) return store.error();
  req.store = *store;
  auto stream = opt_bool(body, "stream");
  if (!stream) return stream.error();
  req.stream = stream->value_or(false);

  req.echo = {{"instructions", req.instructions ? json(*req.instructions) : json(nullptr)},
              {"tools", body.contains("tools") && body["tools"].is_array() ? body["tools"] : json::array()},
              {"tool_choice", body.contains("tool_choice") && !body["tool_choice"].is_null() ? body["tool_choice"]
                                                                                              : json("auto")},
              {"parallel_tool_calls", req.turn.chat.parallel_tool_calls},
              {"text", body.contains("text") && body["text"].is_object() && body["text"].contains("format")
                           ? body["text"]
                           : json{{"format", {{"type", "text"}}}}},
              {"temperature", body.contains("temperature") ? body["temperature"] : json(nullptr)},
              {"top_p", body.contains("top_p") ? body["top_p"] : json(nullptr)},
              {"max_output_tokens", body.contains("max_output_tokens") ? body["max_output_tokens"] : json(nullptr)},
              {"metadata", body.contains("metadata") && body["metadata"].is_object() ? body["metadata"] : json::object()},
              {"user", body.contains("user") ? body["user"] : json(nullptr)}};
  return req;
}

std::string unstorable_param(const ResponsesRequest& r) {
  if (r.input.size() == 1 && r.input[0].role == "user") return "";
  // The outputs of the calls the previous response made: that session's next turn.
  const bool results = r.previous_response_id &&
                       std::all_of(r.input.begin(), r.input.end(), [](const auto& m) { return m.role == "tool"; });
  return results ? "" : "input";
}

std::string stored_response_id(const StoredResponseRef& ref) {
  const std::string hex = ref.session_id.starts_with("ses_") ? ref.session_id.substr(4) : ref.session_id;
  return "resp_" + hex + "_" + std::to_string(ref.n_messages);
}

std::optional<StoredResponseRef> parse_response_id(const std::string& id) {
  if (!id.starts_with("resp_")) return std::nullopt;
  const std::size_t sep = id.find('_', 5);
  if (sep == std::string::npos) return std::nullopt;
  const std::string hex = id.substr(5, sep - 5);
  const std::string n = id.substr(sep + 1);
  if (hex.size() != 24 || n.empty() || n.size() > 9) return std::nullopt;
  for (char c : hex) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) || std::isupper(static_cast<unsigned char>(c))) return std::nullopt;
  }
  for (char c : n) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return StoredResponseRef{"ses_" + hex, static_cast<std::size_t>(std::stoul(n))};
}

}  // namespace llmd::ipc
