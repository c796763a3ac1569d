// The generating endpoints: /v1/completions, /v1/chat/completions, /v1/sessions/{id}/messages
// (see api.h). One turn, streamed as Server-Sent Events or answered whole.
#include <atomic>
#include <chrono>

#include "common/utf8.h"
#include "ipc/api.h"
#include "ipc/api_errors.h"
#include "ipc/chat_request.h"
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


// OpenAI's finish_reason for a finished turn: "tool_calls" when the answer calls tools.
std::string finish_reason_of(const core::TurnResult& res) {
  if (!res.answer.tool_calls.empty() &&
      (res.finish == engine::FinishReason::eog || res.finish == engine::FinishReason::stop)) {
    return "tool_calls";
  }
  return openai_finish_reason(res.finish);
}

nlohmann::json tool_call_json(const engine::ToolCall& c) {
  return {{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}};
}

nlohmann::json bytes_json(const std::string& text) {
  nlohmann::json b = nlohmann::json::array();
  for (unsigned char ch : text) b.push_back(static_cast<int>(ch));
  return b;
}


// Chat completions' logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
nlohmann::json chat_logprobs_json(const std::vector<core::LogprobEntry>& entries) {
  nlohmann::json content = nlohmann::json::array();
  for (const auto& e : entries) {
    nlohmann::json top = nlohmann::json::array();
    for (const auto& t : e.top) {
      top.push_back({{"id", t.id}, {"token", t.text}, {"logprob", t.logprob}, {"bytes", bytes_json(t.text)}});
    }
    content.push_back(
        {{"id", e.id}, {"token", e.text}, {"logprob", e.logprob}, {"bytes", bytes_json(e.text)}, {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

// Completions' logprobs: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}.
nlohmann::json completion_logprobs_json(const std::vector<core::LogprobEntry>& entries) {
  nlohmann::json tokens = nlohmann::json::array(), lps = nlohmann::json::array(), tops = nlohmann::json::array(),
                 offsets = nlohmann::json::array();
  std::size_t offset = 0;
  for (const auto& e : entries) {
    tokens.push_back(e.text);
    lps.push_back(e.logprob);
    nlohmann::json top = nlohmann::json::object();
    for (const auto& t : e.top) top[t.text] = t.logprob;
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += e.text.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

// A parsed answer's piece as a chat delta.
nlohmann::json delta_json(const core::AnswerDelta& d) {
  nlohmann::json delta = nlohmann::json::object();
  if (!d.content.empty()) delta["content"] = d.content;
  if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
  if (d.tool_index >= 0) {
    nlohmann::json call = {{"index", d.tool_index}, {"function", {{"arguments", d.arguments}}}};
    if (!d.tool_id.empty()) {
      call["id"] = d.tool_id;
      call["type"] = "function";
      call["function"]["name"] = d.tool_name;
    }
    delta["tool_calls"] = nlohmann::json::array({call});
  }
  return delta;
}

}  // namespace

Result<std::optional<bool>> Api::read_turn_options(const nlohmann::json& body, core::TurnRequest& turn) const {
  LLMD_TRY_STATUS(ipc::read_turn_options(body, service_.limits(), service_.max_session_tokens(), turn));
  return opt_bool(body, "stream");
}

void Api::completions(HttpRequest& req, std::shared_ptr<Responder> r) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  if (auto st = check_fields(*body, kCompletionFields, "/v1/completions"); !st) return reply_error(*r, st.error());
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
  TurnOutput out{stream->value_or(false), Shape::text_completion, false};
  StreamOptions so;
  if (auto st = read_output_options(*body, /*chat=*/false, out.stream, turn, so); !st) return reply_error(*r, st.error());
  out.include_usage = so.include_usage;
  out.n = so.n;
  run_turn(req, std::move(r), std::move(turn), out);
}

void Api::chat_completions(HttpRequest& req, std::shared_ptr<Responder> r) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  if (auto st = check_fields(*body, kChatFields, "/v1/chat/completions"); !st) return reply_error(*r, st.error());
  core::TurnRequest turn;
  turn.kind = core::TurnRequest::Kind::chat;
  auto it = body->find("messages");
  if (it == body->end()) return reply_error(*r, http_error(400, "messages must be a non-empty array", "invalid_request", "messages"));
  if (auto st = read_chat_messages(*it, turn.messages); !st) return reply_error(*r, st.error());
  auto stream = read_turn_options(*body, turn);
  if (!stream) return reply_error(*r, stream.error());
  if (auto st = read_chat_options(*body, turn.chat); !st) return reply_error(*r, st.error());
  TurnOutput out{stream->value_or(false), Shape::chat_completion, false};
  StreamOptions so;
  if (auto st = read_output_options(*body, /*chat=*/true, out.stream, turn, so); !st) return reply_error(*r, st.error());
  out.include_usage = so.include_usage;
  out.n = so.n;
  auto session = opt_string(*body, "session");
  if (!session) return reply_error(*r, session.error());
  if (*session) {
    // Extension: append the last message (the user's), or the tool results that end the messages,
    // to a stored session; its history is the session's own, so earlier messages in the request
    // are not used. `tools` (if present) become the session's.
    const std::string& last = turn.messages.back().role;
    if (last != "user" && last != "tool") {
      return reply_error(*r, http_error(400, "with \"session\", the last message must be the user's or a tool's result",
                                        "invalid_request", "messages"));
    }
    if (out.n != 1) return reply_error(*r, http_error(400, "a session turn has one answer (n = 1)", "invalid_request", "n"));
    turn.kind = core::TurnRequest::Kind::session_message;
    turn.session_id = **session;
    if (auto st = read_session_tools(*body, turn); !st) return reply_error(*r, st.error());
    if (last == "user") {
      turn.content = std::move(turn.messages.back().content);
    } else {
      std::size_t first = turn.messages.size();
      while (first > 0 && turn.messages[first - 1].role == "tool") --first;
      turn.tool_results.assign(std::make_move_iterator(turn.messages.begin() + static_cast<std::ptrdiff_t>(first)),
                               std::make_move_iterator(turn.messages.end()));
    }
    turn.messages.clear();
  }
  run_turn(req, std::move(r), std::move(turn), out);
}

void Api::post_message(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  if (auto st = check_fields(*body, kMessageFields, "/v1/sessions/{id}/messages"); !st) return reply_error(*r, st.error());
  auto content = opt_string(*body, "content");
  if (!content) return reply_error(*r, content.error());
  core::TurnRequest turn;
  turn.kind = core::TurnRequest::Kind::session_message;
  turn.session_id = id;
  auto stream = read_turn_options(*body, turn);
  if (!stream) return reply_error(*r, stream.error());
  if (auto st = read_chat_options(*body, turn.chat); !st) return reply_error(*r, st.error());
  if (auto st = read_session_tools(*body, turn); !st) return reply_error(*r, st.error());
  if (*content && !turn.tool_results.empty()) {
    return reply_error(*r, http_error(400, "a turn brings content or tool_results, not both", "invalid_request",
                                      "tool_results"));
  }
  if (!*content && turn.tool_results.empty()) {
    return reply_error(*r, http_error(400, "content (or tool_results) is required", "invalid_request", "content"));
  }
  if (*content) turn.content = std::move(**content);
  run_turn(req, std::move(r), std::move(turn), TurnOutput{stream->value_or(true), Shape::session_message, false});
}

void Api::run_turn(const HttpRequest& req, std::shared_ptr<Responder> r, core::TurnRequest turn, TurnOutput out) {
  const Shape shape = out.shape;
  const bool stream = out.stream;
  const bool include_usage = out.include_usage;
  const bool logprobs = turn.params.top_logprobs >= 0;
  const std::size_t n = std::max<std::size_t>(1, out.n);
  const std::string id = new_request_id(shape == Shape::text_completion ? "cmpl-" : "chatcmpl-");
  const std::int64_t created = unix_seconds();
  const std::string session = turn.session_id;
  const std::string model = model_id_;

  // What the choices share (io thread only): n > 1 runs n turns of the same request side by side.
  struct Shared {
    std::vector<std::vector<core::LogprobEntry>> pending;  // per choice: logprobs before their text
    std::vector<std::optional<core::TurnResult>> results;
    std::vector<core::Service::RequestId> requests;
    // Choices 1..n-1, started once choice 0's prompt is in the KV (or it ended): they share it.
    // Cleared when started or when the request fails (their callbacks hold this).
    std::vector<std::pair<core::TurnRequest, core::TurnCallbacks>> later;
    std::size_t left = 0;
    bool started = false;  // the stream's headers went out
    bool failed = false;   // an error was answered
  };
  auto sh = std::make_shared<Shared>();
  sh->pending.resize(n);
  sh->results.resize(n);
  sh->left = n;

  auto logprobs_of = [shape](const std::vector<core::LogprobEntry>& entries) {
    return shape == Shape::text_completion ? completion_logprobs_json(entries) : chat_logprobs_json(entries);
  };
  // One streamed event: a chunk in the endpoint's shape with choice i.
  auto chunk = [=](std::size_t i, nlohmann::json delta_or_text, const nlohmann::json& finish) {
    nlohmann::json choice = {{"index", i}, {"finish_reason", finish}};
    nlohmann::json j = {{"id", id}, {"created", created}, {"model", model}};
    if (shape == Shape::text_completion) {
      j["object"] = "text_completion";
      choice["text"] = std::move(delta_or_text);
    } else {
      j["object"] = "chat.completion.chunk";
      choice["delta"] = std::move(delta_or_text);
    }
    choice["logprobs"] = nullptr;
    if (logprobs && !sh->pending[i].empty()) {
      choice["logprobs"] = logprobs_of(sh->pending[i]);
      sh->pending[i].clear();
    }
    if (!session.empty()) j["session"] = session;
    j["choices"] = nlohmann::json::array({choice});
    return j;
  };
  auto empty_piece = [shape] { return shape == Shape::text_completion ? nlohmann::json("") : nlohmann::json::object(); };
  auto message_of = [](const core::TurnResult& res) {
    nlohmann::json message = {{"role", "assistant"}, {"content", res.answer.content}};
    if (!res.answer.tool_calls.empty()) {
      nlohmann::json calls = nlohmann::json::array();
      for (const auto& c : res.answer.tool_calls) calls.push_back(tool_call_json(c));
      message["tool_calls"] = std::move(calls);
      if (res.answer.content.empty()) message["content"] = nullptr;
    }
    if (!res.answer.reasoning.empty()) message["reasoning_content"] = res.answer.reasoning;
    return message;
  };
  // Usage over every choice: the prompt once, the completions added up.
  auto usage_of = [sh] {
    const core::TurnResult& first = *sh->results[0];
    core::Usage u = first.usage;
    for (std::size_t i = 1; i < sh->results.size(); ++i) u.completion_tokens += sh->results[i]->usage.completion_tokens;
    nlohmann::json j = usage_json(u);
    j["window"] = window_json(first.window);
    if (sh->results.size() > 1) {
      // llmd's extension: how much of the prompt each choice reused rather than computed (the
      // later choices share the first one's KV).
      nlohmann::json cached = nlohmann::json::array();
      for (const auto& res : sh->results) cached.push_back(res->usage.cached_tokens);
      j["choices_cached_tokens"] = std::move(cached);
    }
    return j;
  };
  // The whole answer, for stream=false, once every choice finished.
  auto whole = [=] {
    const core::TurnResult& first = *sh->results[0];
    nlohmann::json j;
    if (shape == Shape::session_message) {
      j = {{"session", session}, {"message", message_of(first)}, {"finish_reason", finish_reason_of(first)}};
    } else {
      nlohmann::json choices = nlohmann::json::array();
      for (std::size_t i = 0; i < n; ++i) {
        const core::TurnResult& res = *sh->results[i];
        nlohmann::json choice = {{"index", i}, {"finish_reason", finish_reason_of(res)}, {"logprobs", nullptr}};
        if (logprobs) choice["logprobs"] = logprobs_of(res.logprobs);
        if (shape == Shape::text_completion) {
          choice["text"] = res.text;
        } else {
          choice["message"] = message_of(res);
        }
        choices.push_back(std::move(choice));
      }
      j = {{"id", id},
           {"object", shape == Shape::text_completion ? "text_completion" : "chat.completion"},
           {"created", created},
           {"model", model},
           {"choices", std::move(choices)}};
      if (!session.empty()) j["session"] = session;
    }
    j["usage"] = usage_of();
    j["timings"] = timings_json(first.timings, first.usage.completion_tokens);
    j["seed"] = first.seed;
    return j;
  };
  // An error ends the whole request: the other choices are cancelled.
  auto fail = [this, r, sh, stream](const Error& e) {
    if (sh->failed) return;
    sh->failed = true;
    sh->later.clear();
    for (auto rid : sh->requests) service_.cancel(rid);
    if (r->closed()) return;
    const HttpError h = to_http_error(e);
    if (!stream || !sh->started) return reply_error(*r, h);
    r->event(to_wire(h.body));
    r->event("[DONE]");
    r->end_events();
  };

  auto start_rest = [this, r, sh, caller = caller_of(req.peer)] {
    auto later = std::move(sh->later);
    sh->later.clear();
    if (sh->failed || r->closed()) return;
    for (auto& [t, cb] : later) sh->requests.push_back(service_.start_turn(caller, std::move(t), std::move(cb)));
  };
  for (std::size_t i = 0; i < n && !sh->failed; ++i) {
    core::TurnRequest t = i + 1 < n ? turn : std::move(turn);
    if (i > 0 && t.params.sampling.seed) t.params.sampling.seed = *t.params.sampling.seed + static_cast<std::uint32_t>(i);
    core::TurnCallbacks cb;
    cb.rejected = [fail](const Error& e) { fail(e); };
    cb.accepted = [r, sh, stream, chunk, shape, i] {
      if (!stream || sh->failed) return;
      if (!sh->started) {
        sh->started = true;
        r->start_events();
      }
      r->event(to_wire(chunk(i, shape == Shape::text_completion ? nlohmann::json("")
                                                                 : nlohmann::json{{"role", "assistant"}, {"content", ""}},
                             nullptr)));
    };
    // The window moved before this turn: a distinct event, before the text. SDKs that do not look
    // at event names (openai-python, openai-node yield every event's data as a chunk) see one more
    // chunk with an empty delta and an extra field, so it is shaped as one.
    cb.window = [r, sh, stream, chunk, empty_piece, i](const core::WindowReport& w) {
      if (!stream || sh->failed || i > 0) return;
      nlohmann::json ev = chunk(i, empty_piece(), nullptr);
      ev["window"] = window_json(w);
      r->named_event("window", to_wire(ev));
    };
    cb.text = [r, sh, stream, chunk, shape, i](const std::string& text) {
      if (!stream || sh->failed) return;
      r->event(to_wire(chunk(i, shape == Shape::text_completion ? nlohmann::json(text) : nlohmann::json{{"content", text}},
                             nullptr)));
    };
    cb.delta = [r, sh, stream, chunk, shape, i](const core::AnswerDelta& d) {
      if (!stream || sh->failed) return;
      if (shape == Shape::text_completion) {
        if (!d.content.empty()) r->event(to_wire(chunk(i, d.content, nullptr)));
        return;
      }
      r->event(to_wire(chunk(i, delta_json(d), nullptr)));
    };
    if (logprobs) {
      cb.logprob = [sh, stream, i](const core::LogprobEntry& e) {
        if (stream) sh->pending[i].push_back(e);
      };
    }
    if (i == 0 && n > 1) cb.prefilled = start_rest;
    cb.done = [r, sh, stream, chunk, whole, empty_piece, usage_of, fail, include_usage, start_rest,
               i](const core::TurnResult& res) {
      if (i == 0) start_rest();  // ended before its first token: the others start now (or never)
      if (sh->failed || r->closed()) return;
      if (res.error || res.finish == engine::FinishReason::cancelled) {
        // A turn cancelled with the connection still open was stopped by llmd (a shutdown), not
        // finished: it is an error, never a finish_reason OpenAI's clients do not know.
        if (res.finish != engine::FinishReason::cancelled) return fail(*res.error);
        return fail(Error(Errc::unavailable, "the request was stopped before it finished: " +
                                                 (res.error ? res.error->message() : std::string("llmd is stopping"))));
      }
      sh->results[i] = res;
      --sh->left;
      if (!stream) {
        if (sh->left == 0) reply_json(*r, 200, whole());
        return;
      }
      nlohmann::json last = chunk(i, empty_piece(), finish_reason_of(res));
      if (sh->left > 0) return r->event(to_wire(last));
      nlohmann::json timings = timings_json(sh->results[0]->timings, sh->results[0]->usage.completion_tokens);
      if (include_usage) {
        // OpenAI's stream_options.include_usage: one more chunk, with no choices, carries the usage.
        r->event(to_wire(last));
        last["choices"] = nlohmann::json::array();
      }
      last["usage"] = usage_of();
      last["timings"] = std::move(timings);
      r->event(to_wire(last));
      r->event("[DONE]");
      r->end_events();
    };
    if (i > 0) {
      sh->later.emplace_back(std::move(t), std::move(cb));
      continue;
    }
    sh->requests.push_back(service_.start_turn(caller_of(req.peer), std::move(t), std::move(cb)));
  }
  // A client that hangs up cancels its turns (within one decode step).
  r->on_close([this, sh] {
    for (auto rid : sh->requests) service_.cancel(rid);
  });
}

}  // namespace llmd::ipc
