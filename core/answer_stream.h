// An answer that is parsed as it streams: tools, JSON schemas and grammars make the generated text
// something to read back (engine::parse_answer) — content, reasoning, tool calls — rather than text
// to show as it is. AnswerStream turns the growing text into OpenAI-shaped deltas: content pieces,
// and per tool call its id and name once, then pieces of its arguments.
//
// Deltas only ever extend what was sent: where a partial parse would take back text already sent
// (a format's parser revising its reading), the stream holds back until the parse extends it
// again, and the final parse sends whatever extends the rest. Tool call ids stay as first sent.
//
// Thread-safety: one instance per turn, used by one thread (the io thread).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "engine/chat_template.h"

namespace llmd::core {

struct AnswerDelta {
  std::string content;    // text to append to the answer's content
  std::string reasoning;  // text to append to its reasoning
  // A tool call: tool_index >= 0. id and name are set on the call's first delta only.
  int tool_index = -1;
  std::string tool_id;
  std::string tool_name;
  std::string arguments;  // a piece of the call's arguments (JSON text)

  bool empty() const { return content.empty() && reasoning.empty() && tool_index < 0; }
};

class AnswerStream {
 public:
  explicit AnswerStream(engine::AnswerSyntax syntax) : syntax_(std::move(syntax)) {}

  // More generated text; the deltas it makes showable (may be none).
  std::vector<AnswerDelta> push(const std::string& text);
  // The whole answer (`text` is all of it, stop strings cut): the final reading, and the deltas
  // that complete what was sent. Its tool calls carry the ids that were sent.
  engine::ParsedAnswer finish(const std::string& text, std::vector<AnswerDelta>& deltas);

 private:
  std::vector<AnswerDelta> advance(engine::ParsedAnswer now);

  engine::AnswerSyntax syntax_;
  std::string text_;
  engine::ParsedAnswer sent_;  // what the deltas so far add up to
};

}  // namespace llmd::core
