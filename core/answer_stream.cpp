// Parsed answers as deltas (see answer_stream.h).
#include "core/answer_stream.h"

namespace llmd::core {
namespace {

// The part of `now` beyond `sent`, when `now` extends it; else nothing (yet).
std::string extension(const std::string& sent, const std::string& now) {
  if (now.size() <= sent.size() || now.compare(0, sent.size(), sent) != 0) return {};
  return now.substr(sent.size());
}

}  // namespace

std::vector<AnswerDelta> AnswerStream::advance(engine::ParsedAnswer now) {
  std::vector<AnswerDelta> out;
  AnswerDelta text;
  text.reasoning = extension(sent_.reasoning, now.reasoning);
  sent_.reasoning += text.reasoning;
  text.content = extension(sent_.content, now.content);
  sent_.content += text.content;
  if (!text.empty()) out.push_back(std::move(text));
  for (std::size_t i = 0; i < now.tool_calls.size(); ++i) {
    engine::ToolCall& call = now.tool_calls[i];
    if (call.name.empty()) break;  // not named yet: later calls cannot be sent before it
    AnswerDelta d;
    d.tool_index = static_cast<int>(i);
    if (i >= sent_.tool_calls.size()) {
      sent_.tool_calls.push_back({call.id, call.name, {}});
      d.tool_id = call.id;
      d.tool_name = call.name;
    }
    engine::ToolCall& sent = sent_.tool_calls[i];
    d.arguments = extension(sent.arguments, call.arguments);
    sent.arguments += d.arguments;
    if (!d.tool_id.empty() || !d.arguments.empty()) out.push_back(std::move(d));
  }
  return out;
}

std::vector<AnswerDelta> AnswerStream::push(const std::string& text) {
  text_ += text;
  if (syntax_.kind == engine::AnswerSyntax::Kind::text) {
    AnswerDelta d;
    d.content = text;
    sent_.content += text;
    return {std::move(d)};
  }
  // The generic format is one JSON object: nothing can be read from it until it is whole.
  if (syntax_.kind == engine::AnswerSyntax::Kind::generic) return {};
  return advance(engine::parse_answer(syntax_, text_, /*partial=*/true));
}

engine::ParsedAnswer AnswerStream::finish(const std::string& text, std::vector<AnswerDelta>& deltas) {
  text_ = text;
  engine::ParsedAnswer answer = engine::parse_answer(syntax_, text_, /*partial=*/false);
  for (auto& d : advance(answer)) deltas.push_back(std::move(d));
  for (std::size_t i = 0; i < answer.tool_calls.size() && i < sent_.tool_calls.size(); ++i) {
    answer.tool_calls[i].id = sent_.tool_calls[i].id;
  }
  return answer;
}

}  // namespace llmd::core
