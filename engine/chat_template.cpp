// Chat templates through llama.cpp's common library, with llmd's generic tool-call format for
// templates that have none (see chat_template.h).
#include "engine/chat_template.h"

#include <chat.h>
#include <json-schema-to-grammar.h>
#include <llama.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/utf8.h"

namespace llmd::engine {
namespace {

using nlohmann::json;

constexpr size_t kMaxRoleBytes = 32;
constexpr size_t kMaxToolNameBytes = 64;
constexpr int kMaxParallelCalls = 8;  // generic format: calls in one answer

Error bad(const std::string& param, const std::string& what) {
  return Error(Errc::invalid_argument, what).with_param(param);
}

Status check_text(const std::string& s) {
  if (!is_valid_utf8(s)) return bad("messages", "message text is not valid UTF-8");
  if (s.find('\0') != std::string::npos) return bad("messages", "message text must not contain NUL characters");
  return {};
}

Status check_messages(std::span<const ChatMessage> messages) {
  if (messages.empty()) return bad("messages", "at least one message is needed");
  if (messages.size() > kMaxChatMessages) {
    return bad("messages", "at most " + std::to_string(kMaxChatMessages) + " messages are allowed");
  }
  for (const auto& m : messages) {
    if (m.role.empty() || m.role.size() > kMaxRoleBytes) {
      return bad("messages", "a message role must be 1 to " + std::to_string(kMaxRoleBytes) + " bytes");
    }
    LLMD_TRY_STATUS(check_text(m.role));
    LLMD_TRY_STATUS(check_text(m.content));
    LLMD_TRY_STATUS(check_text(m.tool_call_id));
    LLMD_TRY_STATUS(check_text(m.name));
    for (const auto& c : m.tool_calls) {
      LLMD_TRY_STATUS(check_text(c.id));
      LLMD_TRY_STATUS(check_text(c.name));
      LLMD_TRY_STATUS(check_text(c.arguments));
    }
  }
  return {};
}

// A JSON object parsed from text, or nullopt.
std::optional<json> parse_object(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

// A tool's arguments schema: its parameters, or "no arguments".
json tool_parameters(const ChatTool& t) {
  if (t.parameters.empty()) return json{{"type", "object"}, {"properties", json::object()}};
  auto p = parse_object(t.parameters);
  return p ? *p : json::object();
}

Status check_options(const ChatOptions& o) {
  if (o.tools.size() > kMaxChatTools) return bad("tools", "at most " + std::to_string(kMaxChatTools) + " tools are allowed");
  for (const auto& t : o.tools) {
    const bool name_ok = !t.name.empty() && t.name.size() <= kMaxToolNameBytes &&
                         t.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
                             std::string::npos;
    if (!name_ok) return bad("tools", "a function name must be 1 to 64 letters, digits, '_' or '-' (got \"" + t.name + "\")");
    if (!is_valid_utf8(t.description)) return bad("tools", "a tool's description is not valid UTF-8");
    if (!t.parameters.empty() && !parse_object(t.parameters)) {
      return bad("tools", "the parameters of function " + t.name + " must be a JSON Schema object");
    }
  }
  if (o.tool_choice == ToolChoice::function) {
    bool found = false;
    for (const auto& t : o.tools) found = found || t.name == o.tool_name;
    if (!found) return bad("tool_choice", "tool_choice names function \"" + o.tool_name + "\", which is not among the tools");
  }
  if ((o.tool_choice == ToolChoice::required || o.tool_choice == ToolChoice::function) && o.tools.empty()) {
    return bad("tool_choice", "tool_choice requires a tool call but no tools were given");
  }
  if (!o.json_schema.empty() && !parse_object(o.json_schema)) {
    return bad("response_format", "the JSON schema must be a JSON object");
  }
  if (!o.grammar.empty() && !o.tools.empty() && o.tool_choice != ToolChoice::none) {
    return bad("grammar", "a grammar cannot be combined with tools");
  }
  if (!o.grammar.empty() && !o.json_schema.empty()) {
    return bad("grammar", "a grammar cannot be combined with response_format");
  }
  return {};
}

common_chat_msg to_common(const ChatMessage& m) {
  common_chat_msg out;
  out.role = m.role;
  out.content = m.content;
  out.tool_call_id = m.tool_call_id;
  out.tool_name = m.name;
  for (const auto& c : m.tool_calls) out.tool_calls.push_back({c.name, c.arguments, c.id});
  return out;
}

// The generic format: an assistant's calls as the JSON object the model would have produced.
std::string generic_calls_text(const std::vector<ToolCall>& calls) {
  json arr = json::array();
  for (const auto& c : calls) {
    auto args = parse_object(c.arguments);
    arr.push_back(json{{"name", c.name}, {"arguments", args ? *args : json(c.arguments)}});
  }
  return json{{"tool_calls", arr}}.dump();
}

std::string generic_instructions(const ChatOptions& o, const std::vector<const ChatTool*>& tools) {
  json list = json::array();
  for (const ChatTool* t : tools) {
    json j = {{"name", t->name}, {"parameters", tool_parameters(*t)}};
    if (!t->description.empty()) j["description"] = t->description;
    list.push_back(std::move(j));
  }
  // Plain words: some vocabularies cannot encode "(" or "#" (TinyStories-656K).
  std::string s = "You can call these tools, with their arguments as JSON Schema:\n" + list.dump() + "\n";
  if (o.tool_choice == ToolChoice::automatic) {
    s += "Answer with one JSON object: {\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {...}}]} to "
         "call tools, or {\"response\": <your answer>} to answer directly.";
  } else {
    s += "Answer with one JSON object that calls tools: {\"tool_calls\": [{\"name\": \"<tool name>\", "
         "\"arguments\": {...}}]}.";
  }
  return s;
}

// The JSON Schema of a generic answer.
json generic_schema(const ChatOptions& o, const std::vector<const ChatTool*>& tools) {
  json calls = json::array();
  for (const ChatTool* t : tools) {
    calls.push_back(json{{"type", "object"},
                         {"properties", {{"name", {{"const", t->name}}}, {"arguments", tool_parameters(*t)}}},
                         {"required", {"name", "arguments"}},
                         {"additionalProperties", false}});
  }
  json items = calls.size() == 1 ? calls[0] : json{{"anyOf", calls}};
  json array = {{"type", "array"}, {"items", items}, {"minItems", 1}};
  array["maxItems"] = o.parallel_tool_calls ? kMaxParallelCalls : 1;
  json call_object = {{"type", "object"},
                      {"properties", {{"tool_calls", array}}},
                      {"required", {"tool_calls"}},
                      {"additionalProperties", false}};
  if (o.tool_choice != ToolChoice::automatic) return call_object;
  json response = o.json_schema.empty() ? json{{"type", "string"}} : *parse_object(o.json_schema);
  json response_object = {{"type", "object"},
                          {"properties", {{"response", response}}},
                          {"required", {"response"}},
                          {"additionalProperties", false}};
  return json{{"anyOf", {call_object, response_object}}};
}

Result<std::string> schema_grammar(const std::string& schema, const std::string& param) {
  try {
    return json_schema_to_grammar(common_json::parse(schema));
  } catch (const std::exception& e) {
    return bad(param, std::string("the JSON schema cannot be turned into a grammar: ") + e.what());
  }
}

void take_triggers(const common_chat_params& p, AnswerGrammar& g) {
  for (const auto& t : p.grammar_triggers) {
    switch (t.type) {
      case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: g.trigger_patterns.push_back(regex_escape(t.value)); break;
      case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: g.trigger_patterns.push_back(t.value); break;
      case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
        std::string a = t.value;
        if (a.empty() || a.front() != '^') a.insert(a.begin(), '^');
        if (a.back() != '$') a.push_back('$');
        g.trigger_patterns.push_back(a);
        break;
      }
      case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: g.trigger_tokens.push_back(t.token); break;
    }
  }
}

}  // namespace

Result<ChatPrompt> apply_chat_template(const Model& model, std::span<const ChatMessage> messages, bool add_assistant,
                                       const ChatOptions& options) {
  LLMD_TRY_STATUS(check_messages(messages));
  LLMD_TRY_STATUS(check_options(options));
  const ModelInfo& info = model.info();
  const bool use_tools = !options.tools.empty() && options.tool_choice != ToolChoice::none;
  const bool generic = use_tools && !info.chat_template_tool_calls;

  std::vector<const ChatTool*> tools;
  for (const auto& t : options.tools) {
    if (options.tool_choice != ToolChoice::function || t.name == options.tool_name) tools.push_back(&t);
  }

  common_chat_templates_inputs in;
  in.use_jinja = true;
  in.add_generation_prompt = add_assistant;
  for (const auto& m : messages) {
    common_chat_msg c = to_common(m);
    if (!info.chat_template_tool_calls && !m.tool_calls.empty()) {
      // A template without tool calls shows an assistant's calls as the generic JSON it wrote.
      c.tool_calls.clear();
      c.content = m.content.empty() ? generic_calls_text(m.tool_calls) : m.content + "\n" + generic_calls_text(m.tool_calls);
    }
    in.messages.push_back(std::move(c));
  }
  if (generic) {
    const std::string text = generic_instructions(options, tools);
    if (!in.messages.empty() && in.messages.front().role == "system") {
      in.messages.front().content += "\n\n" + text;
    } else {
      common_chat_msg sys;
      sys.role = "system";
      sys.content = text;
      in.messages.insert(in.messages.begin(), std::move(sys));
    }
  } else if (use_tools) {
    for (const ChatTool* t : tools) in.tools.push_back({t->name, t->description, tool_parameters(*t).dump()});
    in.tool_choice = options.tool_choice == ToolChoice::automatic ? COMMON_CHAT_TOOL_CHOICE_AUTO
                                                                   : COMMON_CHAT_TOOL_CHOICE_REQUIRED;
    in.parallel_tool_calls = options.parallel_tool_calls;
  }
  if (!generic && !options.json_schema.empty()) in.json_schema = options.json_schema;
  // Plain conversations skip llama.cpp's analysis of the template's formats (a few renders of it):
  // nothing is parsed out of their answers.
  in.force_pure_content = !options.constrained();

  common_chat_params p;
  try {
    p = common_chat_templates_apply(model.chat_templates(), in);
  } catch (const std::exception& e) {
    return bad("messages", std::string("the chat template cannot render these messages: ") + e.what());
  }

  ChatPrompt out;
  out.text = std::move(p.prompt);
  out.fallback = info.chat_template_fallback;
  out.template_name = out.fallback ? kFallbackChatTemplate : "model";
  out.stops = p.additional_stops;
  out.preserved_tokens = p.preserved_tokens;
  out.syntax.generation_prompt = p.generation_prompt;
  if (generic) {
    auto g = schema_grammar(generic_schema(options, tools).dump(), "tools");
    if (!g) return g.error();
    out.grammar.grammar = std::move(*g);
    out.syntax.kind = AnswerSyntax::Kind::generic;
    out.syntax.tools = true;
    out.syntax.json_response = !options.json_schema.empty();
  } else if (options.constrained()) {
    out.syntax.kind = AnswerSyntax::Kind::common;
    out.syntax.format = static_cast<int>(p.format);
    out.syntax.parser = std::move(p.parser);
    out.syntax.tools = use_tools;
    if (!p.grammar.empty()) {
      out.grammar.grammar = std::move(p.grammar);
      out.grammar.lazy = p.grammar_lazy;
      take_triggers(p, out.grammar);
      // common's grammars for tools and schemas start with the template's opening of the answer.
      if (!out.grammar.lazy) out.grammar.prefill = p.generation_prompt;
    } else if (!options.grammar.empty()) {
      out.grammar.grammar = options.grammar;
    } else if (!options.json_schema.empty()) {
      auto g = schema_grammar(options.json_schema, "response_format");
      if (!g) return g.error();
      out.grammar.grammar = std::move(*g);
    }
  }
  // A grammar llama.cpp cannot take is the caller's error, found before anything is queued (its
  // prefill is checked once the prompt is tokenized: bind_prefill).
  if (!out.grammar.grammar.empty()) {
    GrammarParams syntax_only = out.grammar;
    syntax_only.prefill.clear();
    if (auto st = validate_grammar(model, syntax_only); !st) {
      Error e = st.error();
      if (options.grammar.empty() && e.param() == "grammar") e = Error(e).with_param(use_tools ? "tools" : "response_format");
      return e;
    }
  }
  return out;
}

std::vector<Token> preserved_token_ids(const Tokenizer& tok, const std::vector<std::string>& preserved) {
  std::vector<Token> out;
  for (const auto& text : preserved) {
    auto t = tok.tokenize(text, /*add_special=*/false, /*parse_special=*/true);
    if (t && t->size() == 1) out.push_back(t->front());
  }
  return out;
}

std::string tools_to_json(const std::vector<ChatTool>& tools) {
  json arr = json::array();
  for (const auto& t : tools) {
    json f = {{"name", t.name}};
    if (!t.description.empty()) f["description"] = t.description;
    if (!t.parameters.empty()) {
      auto p = parse_object(t.parameters);
      f["parameters"] = p ? *p : json(t.parameters);
    }
    arr.push_back(json{{"type", "function"}, {"function", std::move(f)}});
  }
  return arr.dump();
}

Result<std::vector<ChatTool>> tools_from_json(std::string_view text) {
  const json arr = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!arr.is_array()) return bad("tools", "stored tools are not a JSON array");
  std::vector<ChatTool> out;
  for (const auto& t : arr) {
    if (!t.is_object() || !t.contains("function") || !t["function"].is_object()) return bad("tools", "a stored tool is not a function");
    const json& f = t["function"];
    if (!f.contains("name") || !f["name"].is_string()) return bad("tools", "a stored tool has no name");
    ChatTool c;
    c.name = f["name"].get<std::string>();
    if (f.contains("description") && f["description"].is_string()) c.description = f["description"].get<std::string>();
    if (f.contains("parameters")) c.parameters = f["parameters"].is_string() ? f["parameters"].get<std::string>() : f["parameters"].dump();
    out.push_back(std::move(c));
  }
  return out;
}

Status bind_prefill(const Model& model, const Tokenizer& tok, std::span<const Token> prompt, GrammarParams& g) {
  if (g.grammar.empty() || g.lazy || g.prefill.empty()) return {};
  // The prompt's own last tokens, where they spell the prefill exactly: the grammar then sees what
  // the model saw (tokenized alone, a SentencePiece vocabulary would put a space before it).
  std::string tail;
  for (std::size_t n = 1; n <= prompt.size() && tail.size() < g.prefill.size(); ++n) {
    tail.insert(0, tok.piece(prompt[prompt.size() - n], /*render_special=*/true));
    if (tail == g.prefill) {
      g.prefill_tokens.assign(prompt.end() - static_cast<std::ptrdiff_t>(n), prompt.end());
      break;
    }
  }
  return validate_grammar(model, g);
}

namespace {

std::string new_call_id() {
  static std::atomic<std::uint64_t> n{0};
  static const std::uint64_t base = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  char buf[40];
  std::snprintf(buf, sizeof buf, "call_%012llx%04llx", static_cast<unsigned long long>(base & 0xFFFFFFFFFFFFull),
                static_cast<unsigned long long>(++n & 0xFFFF));
  return buf;
}

ParsedAnswer parse_generic(const AnswerSyntax& syntax, std::string_view text, bool partial) {
  ParsedAnswer out;
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    if (!partial) out.content = std::string(text);  // cut short (max_tokens): shown as it is
    return out;
  }
  if (auto calls = j.find("tool_calls"); calls != j.end() && calls->is_array()) {
    for (const auto& c : *calls) {
      if (!c.is_object() || !c.contains("name") || !c["name"].is_string()) continue;
      ToolCall call;
      call.name = c["name"].get<std::string>();
      const json args = c.value("arguments", json::object());
      call.arguments = args.is_string() ? args.get<std::string>() : args.dump();
      call.id = new_call_id();
      out.tool_calls.push_back(std::move(call));
    }
  } else if (auto r = j.find("response"); r != j.end()) {
    out.content = r->is_string() && !syntax.json_response ? r->get<std::string>() : r->dump();
  }
  return out;
}

// The parser params for `syntax`, its serialized parser loaded. A streamed answer is parsed again
// after every token with the same syntax, and loading llama.cpp's serialized parser (JSON) costs
// far more than parsing a short answer (measured: most of the io thread's time in a json_schema
// answer, bench `grammar`), so the last one loaded on this thread is kept. Throws as load() does.
const common_chat_parser_params& parser_params(const AnswerSyntax& syntax) {
  thread_local common_chat_parser_params pp;
  thread_local std::string loaded;  // the serialized parser pp holds
  thread_local bool valid = false;
  if (!valid || loaded != syntax.parser) {
    valid = false;
    pp = common_chat_parser_params{};
    if (!syntax.parser.empty()) pp.parser.load(syntax.parser);
    loaded = syntax.parser;
    valid = true;
  }
  pp.format = static_cast<common_chat_format>(syntax.format);
  pp.generation_prompt = syntax.generation_prompt;
  pp.parse_tool_calls = syntax.tools;
  return pp;
}

}  // namespace

ParsedAnswer parse_answer(const AnswerSyntax& syntax, std::string_view text, bool partial) {
  switch (syntax.kind) {
    case AnswerSyntax::Kind::text: return ParsedAnswer{std::string(text), {}, {}};
    case AnswerSyntax::Kind::generic: return parse_generic(syntax, text, partial);
    case AnswerSyntax::Kind::common: break;
  }
  ParsedAnswer out;
  try {
    common_chat_msg m = common_chat_parse(std::string(text), partial, parser_params(syntax));
    out.content = std::move(m.content);
    out.reasoning = std::move(m.reasoning_content);
    for (auto& c : m.tool_calls) {
      out.tool_calls.push_back({c.id.empty() ? new_call_id() : std::move(c.id), std::move(c.name), std::move(c.arguments)});
    }
  } catch (const std::exception&) {
    out = ParsedAnswer{};
    if (!partial) out.content = std::string(text);
  }
  return out;
}

}  // namespace llmd::engine
