// POST /v1/responses and GET /v1/responses/{id}: OpenAI's Responses API (see api.h), answered
// whole or streamed as its named events.
//
// A stored response is a session turn: a request that starts a conversation creates a session
// (instructions as its system prompt) and takes its turn there; one that names a
// previous_response_id takes the next turn of that response's session, so its history's KV is
// reused (usage.input_tokens_details.cached_tokens). Continuing from an older response of a
// conversation forks the session, rewinds the fork to that response and goes on there (a branch;
// the original conversation is untouched). The response id names the session and the count of its
// messages up to the answer (responses_request.h), so nothing else is kept and it survives a
// restart; its owner is the session's.
//
// A turn brings one user message, or the outputs of the calls the previous response made
// (function_call_output items: the session's tool results); the request's tools become the
// session's, its text.format constrains the answer. What a session turn cannot carry (several
// messages, calls written by the caller, other instructions than the conversation's) runs as a
// stateless chat turn: the stored conversation's
// messages (when previous_response_id names one), then the input. Such a response is not stored
// ("store": false in it; previous_response_id cannot name it), and an explicit "store": true with
// such a request is a 400 naming the field that prevents it.
#include <atomic>
#include <chrono>

#include "ipc/api.h"
#include "ipc/api_errors.h"
#include "ipc/json_fields.h"
#include "ipc/responses_request.h"

namespace llmd::ipc {

using nlohmann::json;

// One response being made (io thread only): what its object repeats and, streamed, its events so far.
struct ResponseRun {
  std::string id;
  std::int64_t created_at = 0;
  std::string model;
  std::string session;  // the session it is a turn of; "" when not stored
  std::optional<std::string> previous;
  json echo;
  bool stream = false;
  bool started = false;  // the event stream's headers went out
  bool failed = false;
  std::uint64_t seq = 0;           // the next event's sequence_number
  json items = json::array();      // output items so far (streamed)
  int open = -1;                   // the output index of the item still streaming, or -1
  std::map<int, int> tool_items;   // a tool call's index in the answer -> its output index
  std::function<void()> cleanup;   // undoes what was made for a turn that failed (a new session)
};

namespace {

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A response that is not stored: "resp_" + 24 hex digits (no "_N": parse_response_id refuses it).
std::string unstored_id() {
  auto id = core::new_session_id();
  if (id) return "resp_" + id->substr(4);
  static std::atomic<std::uint64_t> counter{0};
  return "resp_" + std::to_string(unix_seconds()) + std::to_string(++counter);
}

std::string item_id(const ResponseRun& run, const char* prefix, std::size_t index) {
  return prefix + run.id.substr(5) + "_" + std::to_string(index);
}

json usage_of(const core::Usage& u) {
  return {{"input_tokens", u.prompt_tokens},
          {"input_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"output_tokens", u.completion_tokens},
          {"output_tokens_details", {{"reasoning_tokens", 0}}},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json message_item(const std::string& id, const std::string& text, const std::string& status) {
  return {{"type", "message"},
          {"id", id},
          {"status", status},
          {"role", "assistant"},
          {"content", json::array({{{"type", "output_text"}, {"text", text}, {"annotations", json::array()}}})}};
}

json function_item(const std::string& id, const engine::ToolCall& c, const std::string& status) {
  return {{"type", "function_call"}, {"id", id},          {"call_id", c.id},
          {"name", c.name},          {"arguments", c.arguments}, {"status", status}};
}

std::string output_text_of(const json& items) {
  std::string text;
  for (const auto& item : items) {
    if (item["type"] != "message") continue;
    for (const auto& part : item["content"]) text += part.value("text", "");
  }
  return text;
}

// The response object: status "in_progress", "completed", "incomplete" or "failed".
json response_json(const ResponseRun& run, const std::string& status, json output, json usage) {
  json j = {{"id", run.id},
            {"object", "response"},
            {"created_at", run.created_at},
            {"status", status},
            {"error", nullptr},
            {"incomplete_details", nullptr},
            {"model", run.model},
            {"output_text", output_text_of(output)},
            {"output", std::move(output)},
            {"previous_response_id", run.previous ? json(*run.previous) : json(nullptr)},
            {"reasoning", {{"effort", nullptr}, {"summary", nullptr}}},
            {"store", !run.session.empty()},
            {"truncation", "disabled"},
            {"usage", std::move(usage)}};
  for (const auto& [k, v] : run.echo.items()) j[k] = v;
  if (status == "incomplete") j["incomplete_details"] = {{"reason", "max_output_tokens"}};
  if (!run.session.empty()) j["session"] = run.session;  // llmd: the conversation's session
  return j;
}

// One streamed event: "event: TYPE", data {"type": TYPE, "sequence_number": N, ...}.
void emit(ResponseRun& run, Responder& r, const std::string& type, json data) {
  data["type"] = type;
  data["sequence_number"] = run.seq++;
  r.named_event(type, to_wire(data));
}

// Ends the item being streamed with its final text or arguments.
void close_open(ResponseRun& run, Responder& r, const std::string& status) {
  if (run.open < 0) return;
  const int at = run.open;
  run.open = -1;
  json& item = run.items[at];
  item["status"] = status;
  const std::string id = item["id"];
  if (item["type"] == "message") {
    json part = item["content"][0];
    emit(run, r, "response.output_text.done",
         {{"item_id", id}, {"output_index", at}, {"content_index", 0}, {"text", part["text"]}, {"logprobs", json::array()}});
    emit(run, r, "response.content_part.done", {{"item_id", id}, {"output_index", at}, {"content_index", 0}, {"part", part}});
  } else {
    emit(run, r, "response.function_call_arguments.done",
         {{"item_id", id}, {"output_index", at}, {"name", item["name"]}, {"arguments", item["arguments"]}});
  }
  emit(run, r, "response.output_item.done", {{"output_index", at}, {"item", item}});
}

void add_text(ResponseRun& run, Responder& r, const std::string& piece) {
  if (piece.empty()) return;
  if (run.open < 0 || run.items[run.open]["type"] != "message") {
    close_open(run, r, "completed");
    run.open = static_cast<int>(run.items.size());
    json item = message_item(item_id(run, "msg_", run.items.size()), "", "in_progress");
    item["content"] = json::array();
    run.items.push_back(item);
    emit(run, r, "response.output_item.added", {{"output_index", run.open}, {"item", item}});
    json part = {{"type", "output_text"}, {"text", ""}, {"annotations", json::array()}};
    emit(run, r, "response.content_part.added",
         {{"item_id", item["id"]}, {"output_index", run.open}, {"content_index", 0}, {"part", part}});
    run.items[run.open]["content"] = json::array({part});
  }
  json& item = run.items[run.open];
  item["content"][0]["text"] = item["content"][0]["text"].get<std::string>() + piece;
  emit(run, r, "response.output_text.delta",
       {{"item_id", item["id"]}, {"output_index", run.open}, {"content_index", 0}, {"delta", piece}, {"logprobs", json::array()}});
}

void add_tool_piece(ResponseRun& run, Responder& r, int tool_index, const engine::ToolCall& start, const std::string& args) {
  auto it = run.tool_items.find(tool_index);
  if (it == run.tool_items.end()) {
    close_open(run, r, "completed");
    run.open = static_cast<int>(run.items.size());
    run.tool_items[tool_index] = run.open;
    engine::ToolCall c = start;
    c.arguments.clear();
    json item = function_item(item_id(run, "fc_", run.items.size()), c, "in_progress");
    run.items.push_back(item);
    emit(run, r, "response.output_item.added", {{"output_index", run.open}, {"item", item}});
    it = run.tool_items.find(tool_index);
  }
  if (args.empty()) return;
  json& item = run.items[it->second];
  item["arguments"] = item["arguments"].get<std::string>() + args;
  emit(run, r, "response.function_call_arguments.delta",
       {{"item_id", item["id"]}, {"output_index", it->second}, {"delta", args}});
}

// The output items of a finished answer (not streamed): its text, then its calls.
json output_of(const ResponseRun& run, const core::TurnResult& res, const std::string& status) {
  json items = json::array();
  if (!res.answer.content.empty() || res.answer.tool_calls.empty()) {
    items.push_back(message_item(item_id(run, "msg_", 0), res.answer.content, status));
  }
  for (const auto& c : res.answer.tool_calls) items.push_back(function_item(item_id(run, "fc_", items.size()), c, status));
  return items;
}

std::string status_of(const core::TurnResult& res) {
  return res.finish == engine::FinishReason::length || res.finish == engine::FinishReason::context_full ? "incomplete"
                                                                                                       : "completed";
}

HttpError no_response(const std::string& id, const std::string& param) {
  return http_error(404, (param.empty() ? "" : param + ": ") + "no stored response " + id +
                             " (a response is kept as a turn of a session of its owner's; one made with "
                             "store: false, or with input a session turn cannot take, is not stored)",
                    "not_found", param);
}

// The stored conversation up to its n-th message, as chat messages.
std::vector<engine::ChatMessage> history_of(const core::SessionDetail& d, std::size_t n, bool keep_system) {
  std::vector<engine::ChatMessage> out;
  for (std::size_t i = 0; i < n && i < d.messages.size(); ++i) {
    const auto& m = d.messages[i];
    if (m.role == "system" && !keep_system) continue;
    out.push_back({m.role, m.content});
  }
  return out;
}

std::optional<std::string> system_of(const core::SessionDetail& d) {
  if (!d.messages.empty() && d.messages[0].role == "system") return d.messages[0].content;
  return std::nullopt;
}

}  // namespace

void Api::responses(HttpRequest& req, std::shared_ptr<Responder> r) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  auto parsed = read_responses_request(*body, service_.limits(), service_.max_session_tokens());
  if (!parsed) return reply_error(*r, parsed.error());
  auto rq = std::make_shared<ResponsesRequest>(std::move(*parsed));
  const core::Caller caller = caller_of(req.peer);
  auto run = std::make_shared<ResponseRun>();
  run->created_at = unix_seconds();
  run->model = model_id_;
  run->previous = rq->previous_response_id;
  run->echo = rq->echo;
  run->stream = rq->stream;
  const bool explicit_store = rq->store.value_or(false);
  const bool want_store = rq->store.value_or(true);

  // Not stored: a chat turn of the history (a stored conversation's), the instructions and the input.
  auto stateless = [this, r, rq, run, caller](std::vector<engine::ChatMessage> history) {
    core::TurnRequest t = rq->turn;
    if (rq->instructions) t.messages.push_back({"system", *rq->instructions});
    for (auto& m : history) t.messages.push_back(std::move(m));
    for (const auto& m : rq->input) t.messages.push_back(m);
    run->id = unstored_id();
    run_response(caller, r, std::move(t), run);
  };
  // Stored: the next turn of `session`, which holds n messages before it.
  auto session_turn = [this, r, rq, run, caller](const std::string& session, std::size_t n, bool made_for_it) {
    core::TurnRequest t = rq->turn;
    t.kind = core::TurnRequest::Kind::session_message;
    t.session_id = session;
    if (rq->input[0].role == "user") {
      t.content = rq->input[0].content;
    } else {
      t.tool_results = rq->input;  // function_call_output items
    }
    t.expect_messages = static_cast<std::uint32_t>(n);  // the id numbers it: nothing may come between
    t.messages.clear();
    // Each request names its tools: they become the session's (none: none), rendered into its turns.
    t.session_tools = std::move(t.chat.tools);
    t.chat.tools.clear();
    run->session = session;
    run->id = stored_response_id({session, n + (t.tool_results.empty() ? 1 : t.tool_results.size()) + 1});
    if (made_for_it) {
      run->cleanup = [this, caller, session] { service_.delete_session(caller, session, [](Status) {}); };
    }
    run_response(caller, r, std::move(t), run);
  };
  auto refuse_store = [r](const std::string& param) {
    reply_error(*r, http_error(400, "store: true needs a request a session turn can take: one user message of text "
                                    "(or the outputs of the previous response's calls), the conversation's own "
                                    "instructions (" + param +
                                    " prevents it; leave store out or send store: false)",
                               "invalid_request", param));
  };

  const std::string why = unstorable_param(*rq);
  if (!rq->previous_response_id) {
    if (!want_store || !why.empty()) {
      if (explicit_store) return refuse_store(why);
      return stateless({});
    }
    return service_.create_session(caller, rq->instructions, rq->turn.app, std::nullopt,
                                   [r, session_turn](Result<core::SessionInfo> s) {
                                     if (!s) return reply_error(*r, s.error());
                                     session_turn(s->id, s->n_messages, true);
                                   });
  }
  const std::string previous = *rq->previous_response_id;
  const auto ref = parse_response_id(previous);
  if (!ref) return reply_error(*r, no_response(previous, "previous_response_id"));
  service_.get_session(caller, ref->session_id, [=, this](Result<core::SessionDetail> d) {
    if (!d) {
      if (d.error().code() == Errc::not_found) return reply_error(*r, no_response(previous, "previous_response_id"));
      return reply_error(*r, d.error());
    }
    const std::size_t n = ref->n_messages;
    if (n == 0 || n > d->messages.size() || d->messages[n - 1].role != "assistant") {
      return reply_error(*r, no_response(previous, "previous_response_id"));
    }
    std::string w = why;
    if (w.empty() && rq->instructions && system_of(*d) != rq->instructions) w = "instructions";
    if (!want_store || !w.empty()) {
      if (explicit_store) return refuse_store(w);
      // New instructions replace the conversation's, as OpenAI's previous_response_id does.
      return stateless(history_of(*d, n, !rq->instructions));
    }
    if (n == d->messages.size()) return session_turn(ref->session_id, n, false);
    // A branch: an older response of the conversation goes on in a fork cut back to it.
    service_.fork_session(caller, ref->session_id, [=, this](Result<core::SessionInfo> f) {
      if (!f) return reply_error(*r, f.error());
      core::Service::Rewind keep;
      keep.keep = static_cast<std::uint32_t>(n);
      const std::string fork = f->id;
      service_.rewind_session(caller, fork, keep, [=, this](Result<core::SessionDetail> cut) {
        if (!cut) {
          service_.delete_session(caller, fork, [](Status) {});
          return reply_error(*r, cut.error());
        }
        session_turn(fork, n, true);
      });
    });
  });
}

void Api::run_response(const core::Caller& caller, std::shared_ptr<Responder> r, core::TurnRequest turn,
                       std::shared_ptr<ResponseRun> run) {
  auto fail = [r, run](const Error& e) {
    if (run->failed) return;
    run->failed = true;
    if (run->cleanup) run->cleanup();
    if (r->closed()) return;
    HttpError h = to_http_error(e);
    // The turn's fields are the request's input here (a session turn's content, a chat's messages).
    if (auto& p = h.body["error"]["param"]; p == "content" || p == "messages") p = "input";
    if (!run->stream || !run->started) return reply_error(*r, h);
    const json& err = h.body["error"];
    emit(*run, *r, "error", {{"code", err["code"]}, {"message", err["message"]}, {"param", err["param"]}});
    json failed = response_json(*run, "failed", run->items, nullptr);
    failed["error"] = {{"code", err["code"]}, {"message", err["message"]}};
    emit(*run, *r, "response.failed", {{"response", failed}});
    r->end_events();
  };
  core::TurnCallbacks cb;
  cb.rejected = [fail](const Error& e) { fail(e); };
  cb.accepted = [r, run] {
    if (!run->stream || run->failed) return;
    run->started = true;
    r->start_events();
    const json created = response_json(*run, "in_progress", json::array(), nullptr);
    emit(*run, *r, "response.created", {{"response", created}});
    emit(*run, *r, "response.in_progress", {{"response", created}});
  };
  cb.text = [r, run](const std::string& piece) {
    if (run->stream && !run->failed) add_text(*run, *r, piece);
  };
  cb.delta = [r, run](const core::AnswerDelta& d) {
    if (!run->stream || run->failed) return;
    add_text(*run, *r, d.content);
    if (d.tool_index >= 0) add_tool_piece(*run, *r, d.tool_index, {d.tool_id, d.tool_name, ""}, d.arguments);
  };
  cb.done = [r, run, fail](const core::TurnResult& res) {
    if (res.error || res.finish == engine::FinishReason::cancelled) {
      // Cancelled with the connection open: llmd is stopping (an error, as in api_turns.cpp).
      return fail(res.error ? *res.error
                            : Error(Errc::unavailable, "the request was cancelled before it finished (llmd is stopping)"));
    }
    if (run->failed || r->closed()) return;
    run->cleanup = nullptr;
    const std::string status = status_of(res);
    if (!run->stream) return reply_json(*r, 200, response_json(*run, status, output_of(*run, res, status), usage_of(res.usage)));
    close_open(*run, *r, status);
    // Whatever the answer holds that its pieces did not show (a call parsed only at the end).
    std::size_t streamed_calls = run->tool_items.size();
    for (std::size_t i = streamed_calls; i < res.answer.tool_calls.size(); ++i) {
      const auto& c = res.answer.tool_calls[i];
      add_tool_piece(*run, *r, static_cast<int>(i), c, c.arguments);
      close_open(*run, *r, status);
    }
    bool has_message = false;
    for (const auto& item : run->items) has_message = has_message || item["type"] == "message";
    if (!has_message && (!res.answer.content.empty() || res.answer.tool_calls.empty())) {
      add_text(*run, *r, res.answer.content);
      if (run->open < 0) {  // an empty answer: its message all the same
        run->items.push_back(message_item(item_id(*run, "msg_", run->items.size()), "", status));
        emit(*run, *r, "response.output_item.added", {{"output_index", run->items.size() - 1}, {"item", run->items.back()}});
        run->open = static_cast<int>(run->items.size() - 1);
      }
      close_open(*run, *r, status);
    }
    const json done = response_json(*run, status, run->items, usage_of(res.usage));
    emit(*run, *r, status == "completed" ? "response.completed" : "response.incomplete", {{"response", done}});
    r->end_events();
  };
  const auto id = service_.start_turn(caller, std::move(turn), std::move(cb));
  // A client that hangs up cancels its turn (within one decode step).
  r->on_close([this, id] { service_.cancel(id); });
}

void Api::get_response(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  const auto ref = parse_response_id(id);
  if (!ref) return reply_error(*r, no_response(id, ""));
  const std::string model = model_id_;
  service_.get_session(caller_of(req.peer), ref->session_id, [r, ref, id, model](Result<core::SessionDetail> d) {
    if (!d) return reply_error(*r, d.error().code() == Errc::not_found ? no_response(id, "") : to_http_error(d.error()));
    const std::size_t n = ref->n_messages;
    if (n == 0 || n > d->messages.size() || d->messages[n - 1].role != "assistant") {
      return reply_error(*r, no_response(id, ""));
    }
    ResponseRun run;
    run.id = id;
    run.model = model;
    run.session = ref->session_id;
    run.created_at = d->messages[n - 1].created_ms / 1000;
    // The response before it: the answer before this turn's message (or tool results).
    std::size_t before = n - 1;
    while (before > 0 && (d->messages[before - 1].role == "user" || d->messages[before - 1].role == "tool")) --before;
    if (before > 0 && before < n - 1 && d->messages[before - 1].role == "assistant") {
      run.previous = stored_response_id({ref->session_id, before});
    }
    const auto system = system_of(*d);
    run.echo = {{"instructions", system ? json(*system) : json(nullptr)},
                {"tools", json::array()},
                {"tool_choice", "auto"},
                {"text", {{"format", {{"type", "text"}}}}}};
    // What is kept of it: the answer, as the session holds it (not its usage or how it finished).
    json output = json::array({message_item(item_id(run, "msg_", 0), d->messages[n - 1].content, "completed")});
    reply_json(*r, 200, response_json(run, "completed", std::move(output), nullptr));
  });
}

}  // namespace llmd::ipc
