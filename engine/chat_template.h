// Turning chat messages into a prompt with the model's chat template, and what the answer must
// look like: llama.cpp's own chat layer (`common`: Jinja templates, tool-call formats, JSON Schema
// to grammar) behind a header free of its types.
//
// Rendering: the model's template (GGUF key tokenizer.chat_template) runs in llama.cpp's Jinja
// engine, as llama-server --jinja does. The documented fallback: a model without a template, or
// one the Jinja engine cannot parse, gets the ChatML template (<|im_start|>role\ncontent<|im_end|>\n
// ...), and ChatPrompt::fallback says so. Plain messages never fail on a valid conversation;
// a template that raises an error for these messages (e.g. "roles must alternate") is
// invalid_argument with the template's message.
//
// Constraints (ChatOptions): tools, a JSON schema or a GBNF grammar make the answer
// grammar-constrained. A template family llama.cpp knows (Qwen, Llama 3.x, Mistral, Hermes, ...)
// gets its own tool-call format and parser from llama.cpp. A template with no tool calls at all
// (ChatML, the fallback, story models) gets llmd's generic format instead: the tools are described
// in the system message and the answer is one JSON object, {"tool_calls": [{"name", "arguments"}]}
// or {"response": ...}, constrained by a grammar made from the tools' schemas — so even a tiny model
// produces a call whose arguments validate. parse_answer reads either kind back.
//
// Thread-safety: pure functions over an immutable Model; any thread (parse_answer keeps the last
// parser it loaded in a thread_local cache).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "engine/types.h"

namespace llmd::engine {

inline constexpr const char* kFallbackChatTemplate = "chatml";
inline constexpr size_t kMaxChatMessages = 4096;
inline constexpr size_t kMaxChatTools = 128;

struct ToolCall {
  std::string id;         // the caller's or generated ("call_..."); may be empty in history
  std::string name;       // the function
  std::string arguments;  // JSON text (an object)
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool" (others are passed to the template)
  std::string content;
  std::vector<ToolCall> tool_calls = {};  // assistant: the calls it made
  std::string tool_call_id = {};          // tool: the call this is the result of
  std::string name = {};                  // tool: the function's name (optional)
};

struct ChatTool {
  std::string name;
  std::string description;
  std::string parameters;  // a JSON Schema (text) of the arguments object; "" = no arguments
};

enum class ToolChoice { automatic, none, required, function };

struct ChatOptions {
  std::vector<ChatTool> tools;
  ToolChoice tool_choice = ToolChoice::automatic;
  std::string tool_name;  // ToolChoice::function: the one to call
  // Several calls in one answer. Off unless asked for, as llama-server does for templates that do
  // not show parallel calls: a small model asked for "one or more" calls greedily repeats the first.
  bool parallel_tool_calls = false;
  std::string json_schema;  // the answer is JSON valid against this schema (text); "" = none
  std::string grammar;      // the answer follows this GBNF grammar (llama.cpp's); "" = none

  bool constrained() const {
    return (!tools.empty() && tool_choice != ToolChoice::none) || !json_schema.empty() || !grammar.empty();
  }
};

// How an answer is read back (parse_answer). Opaque to everyone but the engine; plain values, so
// it travels with a job.
struct AnswerSyntax {
  enum class Kind { text, common, generic } kind = Kind::text;
  int format = 0;               // llama.cpp's chat format (Kind::common)
  std::string parser;           // llama.cpp's serialized answer parser (Kind::common)
  std::string generation_prompt;
  bool tools = false;           // tool calls may appear (parse them)
  bool json_response = false;   // generic: "response" holds JSON (a schema), not text
};

// What sampling must obey for the answer (engine/sampler.h).
using AnswerGrammar = GrammarParams;

struct ChatPrompt {
  std::string text;           // the formatted prompt
  std::string template_name;  // "model" when the model's template was used, else the fallback's name
  bool fallback = false;
  AnswerGrammar grammar;
  AnswerSyntax syntax;
  std::vector<std::string> stops;             // extra stop strings the format needs
  std::vector<std::string> preserved_tokens;  // special tokens the answer's text must show
};

// invalid_argument for no messages, more than kMaxChatMessages, an empty or over-long role, text
// that is not UTF-8, more than kMaxChatTools tools, a tool's schema or the json_schema that is not
// a JSON object, a grammar llama.cpp cannot parse, tools with a grammar, a named tool that is not
// among the tools, or a template that fails on these messages (param "messages", "tools",
// "response_format", "grammar" or "tool_choice"). add_assistant: end with the tokens that open an
// assistant turn.
Result<ChatPrompt> apply_chat_template(const Model& model, std::span<const ChatMessage> messages, bool add_assistant,
                                       const ChatOptions& options = {});

// The token ids of a ChatPrompt's preserved_tokens (those that are one token of this vocabulary):
// GenerateParams::shown_special, so the answer's text shows them and its parser finds them.
std::vector<Token> preserved_token_ids(const Tokenizer& tok, const std::vector<std::string>& preserved);

// Tools as stored text (a session's tools: kvstore SessionRecord::tools): a JSON array in OpenAI's
// "tools" shape, canonical (the same tools give the same text). tools_from_json reads it back:
// invalid_argument (param "tools") for anything else.
std::string tools_to_json(const std::vector<ChatTool>& tools);
Result<std::vector<ChatTool>> tools_from_json(std::string_view text);

// Binds the grammar's prefill to the tokens that end `prompt` (the tokenized ChatPrompt::text) when
// they spell it, and checks that the grammar takes them: invalid_argument (param response_format)
// otherwise. Call it on the prompt's tokens before the grammar is used.
Status bind_prefill(const Model& model, const Tokenizer& tok, std::span<const Token> prompt, GrammarParams& grammar);

// The answer as the caller sees it.
struct ParsedAnswer {
  std::string content;
  std::string reasoning;
  std::vector<ToolCall> tool_calls;  // ids generated where the model gave none
};

// Reads generated text back. partial: the text so far of an answer still being generated (for
// streaming); never fails then. A complete answer that does not match its format (e.g. cut by
// max_tokens) is returned as plain content, without tool calls.
ParsedAnswer parse_answer(const AnswerSyntax& syntax, std::string_view text, bool partial);

}  // namespace llmd::engine
