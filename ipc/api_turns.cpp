// The generating endpoints: /v1/completions, /v1/chat/completions, /v1/sessions/{id}/messages
// (see api.h). One turn, streamed as Server-Sent Events or answered whole.
#include <atomic>
#include <chrono>

#include "common/utf8.h"
#include "ipc/api.h"
#include "ipc/api_errors.h"
#include "ipc/json_fields.h"
#include "ipc/turn_options.h"

namespace llmd::ipc {
namespace {

std::string new_request_id(const char* prefix) {
  static std::atomic<std::uint64_t> counter{0};
  const auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return std::string(prefix) + std::to_string(now) + "-" + std::to_string(++counter);
}

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Text of a chat message's content: a string, or an array of {"type": "text", "text": ...} parts.
Result<std::string> content_text(const nlohmann::json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string out;
    for (const auto& part : content) {
      // (Not part.value("type", ""): it throws when "type" is there but not a string.)
      const auto type = part.is_object() ? part.find("type") : part.end();
      const auto text = part.is_object() ? part.find("text") : part.end();
      if (type == part.end() || *type != "text" || text == part.end() || !text->is_string()) {
        return Error(Errc::invalid_argument, "only text content parts are supported").with_param("messages");
      }
      out += text->get<std::string>();
    }
    return out;
  }
  return Error(Errc::invalid_argument, "message content must be a string or an array of text parts").with_param("messages");
}

}  // namespace

Result<std::optional<bool>> Api::read_turn_options(const nlohmann::json& body, core::TurnRequest& turn) const {
  LLMD_TRY_STATUS(ipc::read_turn_options(body, service_.limits(), service_.max_session_tokens(), turn));
  return opt_bool(body, "stream");
}

void Api::completions(HttpRequest& req, std::shared_ptr<Responder> r) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  core::TurnRequest turn;
  turn.kind = core::TurnRequest::Kind::completion;
  auto it = body->find("prompt");
  if (it == body->end()) return reply_error(*r, http_error(400, "prompt is required", "invalid_request", "prompt"));
  if (it->is_array() && it->size() == 1 && (*it)[0].is_string()) {
    turn.prompt = (*it)[0].get<std::string>();
  } else if (it->is_string()) {
    turn.prompt = it->get<std::string>();
  } else {
    return reply_error(*r, http_error(400, "prompt must be a string (or an array of one string)", "invalid_request",
                                      "prompt"));
  }
  auto stream = read_turn_options(*body, turn);
  if (!stream) return reply_error(*r, stream.error());
  run_turn(req, std::move(r), std::move(turn), stream->value_or(false), Shape::text_completion);
}

void Api::chat_completions(HttpRequest& req, std::shared_ptr<Responder> r) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  core::TurnRequest turn;
  turn.kind = core::TurnRequest::Kind::chat;
  auto it = body->find("messages");
  if (it == body->end() || !it->is_array() || it->empty()) {
    return reply_error(*r, http_error(400, "messages must be a non-empty array", "invalid_request", "messages"));
  }
  for (const auto& m : *it) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content")) {
      return reply_error(*r, http_error(400, "each message needs a string role and a content", "invalid_request",
                                        "messages"));
    }
    auto text = content_text(m["content"]);
    if (!text) return reply_error(*r, text.error());
    turn.messages.push_back({m["role"].get<std::string>(), std::move(*text)});
  }
  auto stream = read_turn_options(*body, turn);
  if (!stream) return reply_error(*r, stream.error());
  auto session = opt_string(*body, "session");
  if (!session) return reply_error(*r, session.error());
  if (*session) {
    // Extension: append the last message (the user's) to a stored session; its history is the
    // session's own, so earlier messages in the request are not used.
    if (turn.messages.back().role != "user") {
      return reply_error(*r, http_error(400, "with \"session\", the last message must be the user's", "invalid_request",
                                        "messages"));
    }
    turn.kind = core::TurnRequest::Kind::session_message;
    turn.session_id = **session;
    turn.content = std::move(turn.messages.back().content);
    turn.messages.clear();
  }
  run_turn(req, std::move(r), std::move(turn), stream->value_or(false), Shape::chat_completion);
}

void Api::post_message(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  auto content = opt_string(*body, "content");
  if (!content) return reply_error(*r, content.error());
  if (!*content) return reply_error(*r, http_error(400, "content is required", "invalid_request", "content"));
  core::TurnRequest turn;
  turn.kind = core::TurnRequest::Kind::session_message;
  turn.session_id = id;
  turn.content = std::move(**content);
  auto stream = read_turn_options(*body, turn);
  if (!stream) return reply_error(*r, stream.error());
  run_turn(req, std::move(r), std::move(turn), stream->value_or(true), Shape::session_message);
}

void Api::run_turn(const HttpRequest& req, std::shared_ptr<Responder> r, core::TurnRequest turn, bool stream,
                   Shape shape) {
  const std::string id = new_request_id(shape == Shape::text_completion ? "cmpl-" : "chatcmpl-");
  const std::int64_t created = unix_seconds();
  const std::string session = turn.session_id;
  const std::string model = model_id_;

  // One streamed event: a chunk in the endpoint's shape.
  auto chunk = [=](const std::string& text, const nlohmann::json& finish, bool first) {
    nlohmann::json choice = {{"index", 0}, {"finish_reason", finish}};
    nlohmann::json j = {{"id", id}, {"created", created}, {"model", model}};
    if (shape == Shape::text_completion) {
      j["object"] = "text_completion";
      choice["text"] = text;
      choice["logprobs"] = nullptr;
    } else {
      j["object"] = "chat.completion.chunk";
      nlohmann::json delta = nlohmann::json::object();
      if (first) delta["role"] = "assistant";
      if (!text.empty() || first) delta["content"] = text;
      choice["delta"] = delta;
    }
    if (!session.empty()) j["session"] = session;
    j["choices"] = nlohmann::json::array({choice});
    return j;
  };
  // The whole answer, for stream=false.
  auto whole = [=](const core::TurnResult& res) {
    const std::string fr = openai_finish_reason(res.finish);
    nlohmann::json j;
    if (shape == Shape::session_message) {
      j = {{"session", session}, {"message", {{"role", "assistant"}, {"content", res.text}}}, {"finish_reason", fr}};
    } else {
      nlohmann::json choice = {{"index", 0}, {"finish_reason", fr}};
      if (shape == Shape::text_completion) {
        choice["text"] = res.text;
        choice["logprobs"] = nullptr;
      } else {
        choice["message"] = {{"role", "assistant"}, {"content", res.text}};
      }
      j = {{"id", id},
           {"object", shape == Shape::text_completion ? "text_completion" : "chat.completion"},
           {"created", created},
           {"model", model},
           {"choices", nlohmann::json::array({choice})}};
      if (!session.empty()) j["session"] = session;
    }
    j["usage"] = usage_json(res.usage);
    j["usage"]["window"] = window_json(res.window);
    j["timings"] = timings_json(res.timings, res.usage.completion_tokens);
    j["seed"] = res.seed;
    return j;
  };

  core::TurnCallbacks cb;
  cb.rejected = [r](const Error& e) { reply_error(*r, e); };
  cb.accepted = [r, stream, chunk] {
    if (!stream) return;
    r->start_events();
    r->event(to_wire(chunk("", nullptr, true)));
  };
  // The window moved before this turn: a distinct event, before the text. SDKs that do not look
  // at event names (openai-python, openai-node yield every event's data as a chunk) see one more
  // chunk with an empty delta and an extra field, so it is shaped as one.
  cb.window = [r, stream, chunk](const core::WindowReport& w) {
    if (!stream) return;
    nlohmann::json ev = chunk("", nullptr, false);
    if (ev["choices"][0].contains("delta")) ev["choices"][0]["delta"] = nlohmann::json::object();
    ev["window"] = window_json(w);
    r->named_event("window", to_wire(ev));
  };
  cb.text = [r, stream, chunk](const std::string& text) {
    if (stream) r->event(to_wire(chunk(text, nullptr, false)));
  };
  cb.done = [r, stream, chunk, whole](const core::TurnResult& res) {
    if (r->closed()) return;
    if (res.error && res.finish != engine::FinishReason::cancelled) {
      const HttpError e = to_http_error(*res.error);
      if (!stream) return reply_error(*r, e);
      r->event(to_wire(e.body));
      r->event("[DONE]");
      return r->end_events();
    }
    if (!stream) return reply_json(*r, 200, whole(res));
    nlohmann::json last = chunk("", openai_finish_reason(res.finish), false);
    last["usage"] = usage_json(res.usage);
    last["usage"]["window"] = window_json(res.window);
    last["timings"] = timings_json(res.timings, res.usage.completion_tokens);
    r->event(to_wire(last));
    r->event("[DONE]");
    r->end_events();
  };
  const auto rid = service_.start_turn(caller_of(req.peer), std::move(turn), std::move(cb));
  // A client that hangs up cancels its turn (within one decode step).
  r->on_close([this, rid] { service_.cancel(rid); });
}

}  // namespace llmd::ipc
