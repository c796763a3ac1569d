// OpenAI request fields beyond the generation options (see chat_request.h).
#include "ipc/chat_request.h"

#include "ipc/json_fields.h"

namespace llmd::ipc {
namespace {

using nlohmann::json;

constexpr std::string_view kAdvisory[] = {"model", "user", "metadata", "store"};

Error bad(const std::string& param, const std::string& what) {
  return Error(Errc::invalid_argument, what).with_param(param);
}

// The sampling and scheduling options every generating endpoint takes (turn_options.h).
#define LLMD_GENERATION_FIELDS                                                                               \
  "stream", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "repeat_penalty",       \
      "repetition_penalty", "ignore_eos", "priority", "app", "presence_penalty", "frequency_penalty",        \
      "logit_bias", "max_completion_tokens"

// Text of a message's content: a string, null, or an array of {"type": "text", "text": ...} parts.
Result<std::string> content_text(const json& content, bool may_be_null) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null() && may_be_null) return std::string();
  if (content.is_array()) {
    std::string out;
    for (const auto& part : content) {
      const auto type = part.is_object() ? part.find("type") : part.end();
      const auto text = part.is_object() ? part.find("text") : part.end();
      if (type == part.end() || *type != "text" || text == part.end() || !text->is_string()) {
        return bad("messages", "only text content parts are supported");
      }
      out += text->get<std::string>();
    }
    return out;
  }
  return bad("messages", "message content must be a string or an array of text parts");
}

Result<std::string> string_field(const json& obj, const char* key, const std::string& param, bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return bad(param, param + ": " + key + " is required");
    return std::string();
  }
  if (!it->is_string()) return bad(param, param + ": " + key + " must be a string");
  return it->get<std::string>();
}

Status only_keys(const json& obj, std::initializer_list<std::string_view> keys, const std::string& param) {
  for (const auto& [k, v] : obj.items()) {
    bool known = false;
    for (auto key : keys) known = known || k == key;
    if (!known) return bad(param, param + ": \"" + k + "\" is not supported");
  }
  return {};
}

Result<engine::ToolCall> read_tool_call(const json& c) {
  if (!c.is_object()) return bad("messages", "messages: each tool call must be an object");
  LLMD_TRY_STATUS(only_keys(c, {"id", "type", "function", "index"}, "messages"));
  auto type = string_field(c, "type", "messages", false);
  if (!type) return type.error();
  if (!type->empty() && *type != "function") return bad("messages", "messages: tool calls of type \"" + *type + "\" are not supported");
  auto f = c.find("function");
  if (f == c.end() || !f->is_object()) return bad("messages", "messages: a tool call needs a function object");
  engine::ToolCall call;
  auto id = string_field(c, "id", "messages", false);
  if (!id) return id.error();
  call.id = std::move(*id);
  auto name = string_field(*f, "name", "messages", true);
  if (!name) return name.error();
  call.name = std::move(*name);
  auto args = f->find("arguments");
  if (args == f->end() || args->is_null()) {
    call.arguments = "{}";
  } else if (args->is_string()) {
    call.arguments = args->get<std::string>();
  } else if (args->is_object()) {
    call.arguments = args->dump();
  } else {
    return bad("messages", "messages: a tool call's arguments must be a JSON string");
  }
  return call;
}

}  // namespace

const std::initializer_list<std::string_view> kChatFields = {
    LLMD_GENERATION_FIELDS, "messages", "overflow", "session", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "grammar", "logprobs", "top_logprobs", "n", "stream_options"};
const std::initializer_list<std::string_view> kCompletionFields = {
    LLMD_GENERATION_FIELDS, "prompt", "overflow", "logprobs", "n", "stream_options"};
const std::initializer_list<std::string_view> kMessageFields = {
    LLMD_GENERATION_FIELDS, "content", "overflow", "response_format", "grammar", "tools", "tool_choice",
    "parallel_tool_calls", "tool_results"};

Status read_session_tools(const json& body, core::TurnRequest& turn) {
  // The session's tools apply to a turn that does not send them: its tool_choice is then "auto"
  // unless it says otherwise (read_chat_options took "none" for a request without tools).
  if (auto c = body.find("tool_choice"); c == body.end() || c->is_null()) turn.chat.tool_choice = engine::ToolChoice::automatic;
  if (auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    turn.session_tools = std::move(turn.chat.tools);
    turn.chat.tools.clear();
  }
  if (auto results = body.find("tool_results"); results != body.end() && !results->is_null()) {
    if (!results->is_array() || results->empty()) return bad("tool_results", "tool_results must be a non-empty array");
    for (const auto& m : *results) {
      if (!m.is_object()) return bad("tool_results", "each tool result must be an object");
      LLMD_TRY_STATUS(only_keys(m, {"tool_call_id", "content"}, "tool_results"));
      auto id = string_field(m, "tool_call_id", "tool_results", false);
      if (!id) return id.error();
      auto content = string_field(m, "content", "tool_results", true);
      if (!content) return content.error();
      engine::ChatMessage r{"tool", std::move(*content)};
      r.tool_call_id = std::move(*id);
      turn.tool_results.push_back(std::move(r));
    }
  }
  return {};
}

Status check_fields(const json& body, std::initializer_list<std::string_view> fields, std::string_view endpoint) {
  for (const auto& [key, value] : body.items()) {
    bool known = false;
    for (auto f : fields) known = known || key == f;
    for (auto f : kAdvisory) known = known || key == f;
    if (!known) {
      return bad(key, key + " is not supported by " + std::string(endpoint) +
                          " (llmd answers every field it does not implement with this error rather than ignore it)");
    }
  }
  return {};
}

Status read_chat_messages(const json& messages, std::vector<engine::ChatMessage>& out) {
  if (!messages.is_array() || messages.empty()) return bad("messages", "messages must be a non-empty array");
  for (const auto& m : messages) {
    if (!m.is_object()) return bad("messages", "each message must be an object");
    LLMD_TRY_STATUS(only_keys(m, {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"}, "messages"));
    auto role = string_field(m, "role", "messages", true);
    if (!role) return role.error();
    engine::ChatMessage msg;
    msg.role = *role == "developer" ? "system" : *role;
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "tool") {
      return bad("messages", "messages: unknown role \"" + *role + "\" (system, developer, user, assistant or tool)");
    }
    const bool assistant = msg.role == "assistant";
    auto content = m.find("content");
    if (content == m.end() && !assistant) return bad("messages", "messages: each " + msg.role + " message needs a content");
    if (content != m.end()) {
      auto text = content_text(*content, assistant);
      if (!text) return text.error();
      msg.content = std::move(*text);
    }
    if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
      if (!assistant) return bad("messages", "messages: only an assistant message has tool_calls");
      if (!calls->is_array()) return bad("messages", "messages: tool_calls must be an array");
      for (const auto& c : *calls) {
        auto call = read_tool_call(c);
        if (!call) return call.error();
        msg.tool_calls.push_back(std::move(*call));
      }
    }
    if (assistant && content == m.end() && msg.tool_calls.empty()) {
      return bad("messages", "messages: an assistant message needs a content or tool_calls");
    }
    auto id = string_field(m, "tool_call_id", "messages", msg.role == "tool");
    if (!id) return id.error();
    msg.tool_call_id = std::move(*id);
    auto name = string_field(m, "name", "messages", false);
    if (!name) return name.error();
    if (msg.role == "tool") msg.name = std::move(*name);  // a function's name; elsewhere a speaker's, not used
    out.push_back(std::move(msg));
  }
  return {};
}

Status read_chat_options(const json& body, engine::ChatOptions& chat) {
  if (auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) return bad("tools", "tools must be an array");
    for (const auto& t : *tools) {
      if (!t.is_object()) return bad("tools", "each tool must be an object");
      LLMD_TRY_STATUS(only_keys(t, {"type", "function"}, "tools"));
      auto type = string_field(t, "type", "tools", true);
      if (!type) return type.error();
      if (*type != "function") return bad("tools", "tools of type \"" + *type + "\" are not supported (only \"function\")");
      auto f = t.find("function");
      if (f == t.end() || !f->is_object()) return bad("tools", "a tool needs a function object");
      LLMD_TRY_STATUS(only_keys(*f, {"name", "description", "parameters", "strict"}, "tools"));
      engine::ChatTool tool;
      auto name = string_field(*f, "name", "tools", true);
      if (!name) return name.error();
      tool.name = std::move(*name);
      auto description = string_field(*f, "description", "tools", false);
      if (!description) return description.error();
      tool.description = std::move(*description);
      if (auto p = f->find("parameters"); p != f->end() && !p->is_null()) {
        if (!p->is_object()) return bad("tools", "the parameters of function " + tool.name + " must be a JSON Schema object");
        tool.parameters = p->dump();
      }
      if (auto s = f->find("strict"); s != f->end() && !s->is_null() && !s->is_boolean()) {
        return bad("tools", "a function's strict must be true or false");
      }
      chat.tools.push_back(std::move(tool));
    }
  }
  if (auto c = body.find("tool_choice"); c != body.end() && !c->is_null()) {
    if (c->is_string()) {
      const auto s = c->get<std::string>();
      if (s == "auto") chat.tool_choice = engine::ToolChoice::automatic;
      else if (s == "none") chat.tool_choice = engine::ToolChoice::none;
      else if (s == "required") chat.tool_choice = engine::ToolChoice::required;
      else return bad("tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or a named function");
    } else if (c->is_object()) {
      LLMD_TRY_STATUS(only_keys(*c, {"type", "function"}, "tool_choice"));
      auto f = c->find("function");
      if (c->value("type", json()) != "function" || f == c->end() || !f->is_object()) {
        return bad("tool_choice", "tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
      }
      auto name = string_field(*f, "name", "tool_choice", true);
      if (!name) return name.error();
      chat.tool_choice = engine::ToolChoice::function;
      chat.tool_name = std::move(*name);
    } else {
      return bad("tool_choice", "tool_choice must be a string or an object");
    }
  } else if (chat.tools.empty()) {
    chat.tool_choice = engine::ToolChoice::none;
  }
  auto parallel = opt_bool(body, "parallel_tool_calls");
  if (!parallel) return parallel.error();
  if (*parallel) chat.parallel_tool_calls = **parallel;
  if (auto rf = body.find("response_format"); rf != body.end() && !rf->is_null()) {
    if (!rf->is_object()) return bad("response_format", "response_format must be an object");
    LLMD_TRY_STATUS(only_keys(*rf, {"type", "json_schema", "schema"}, "response_format"));
    auto type = string_field(*rf, "type", "response_format", true);
    if (!type) return type.error();
    if (*type == "json_object") {
      auto s = rf->find("schema");
      chat.json_schema = s != rf->end() && s->is_object() ? s->dump() : json{{"type", "object"}}.dump();
    } else if (*type == "json_schema") {
      auto js = rf->find("json_schema");
      if (js == rf->end() || !js->is_object()) return bad("response_format", "response_format: json_schema must be an object");
      LLMD_TRY_STATUS(only_keys(*js, {"name", "schema", "strict", "description"}, "response_format"));
      auto s = js->find("schema");
      if (s == js->end() || !s->is_object()) return bad("response_format", "response_format: json_schema.schema must be an object");
      chat.json_schema = s->empty() ? json{{"type", "object"}}.dump() : s->dump();
    } else if (*type != "text") {
      return bad("response_format", "response_format type must be \"text\", \"json_object\" or \"json_schema\"");
    }
  }
  auto grammar = opt_string(body, "grammar");
  if (!grammar) return grammar.error();
  if (*grammar) chat.grammar = std::move(**grammar);
  return {};
}

Status read_output_options(const json& body, bool chat, bool stream, core::TurnRequest& turn, StreamOptions& so) {
  auto n = opt_int(body, "n", 1, kMaxChoices);
  if (!n) return n.error();
  so.n = static_cast<std::uint32_t>(n->value_or(1));
  if (chat) {
    auto logprobs = opt_bool(body, "logprobs");
    if (!logprobs) return logprobs.error();
    auto top = opt_int(body, "top_logprobs", 0, engine::kMaxTopLogprobs);
    if (!top) return top.error();
    if (*top && !logprobs->value_or(false)) return bad("top_logprobs", "top_logprobs needs logprobs: true");
    if (logprobs->value_or(false)) turn.params.top_logprobs = static_cast<std::int32_t>(top->value_or(0));
  } else {
    auto logprobs = opt_int(body, "logprobs", 0, 5);
    if (!logprobs) return logprobs.error();
    if (*logprobs) turn.params.top_logprobs = static_cast<std::int32_t>(**logprobs);
  }
  if (auto o = body.find("stream_options"); o != body.end() && !o->is_null()) {
    if (!stream) return bad("stream_options", "stream_options is only for stream: true");
    if (!o->is_object()) return bad("stream_options", "stream_options must be an object");
    LLMD_TRY_STATUS(only_keys(*o, {"include_usage"}, "stream_options"));
    auto u = opt_bool(*o, "include_usage");
    if (!u) return Error(u.error()).with_param("stream_options");
    so.include_usage = u->value_or(false);
  }
  return {};
}

}  // namespace llmd::ipc
