// The HTTP API (v1) on top of the daemon's Service: routing, request parsing, response shapes.
//
//   GET    /v1/health                       liveness ({"status": "ok"}, 503 while stopping); from the
//                                           Service's counts, never the engine's stats
//   GET    /v1/status                       model, slots, queue, sessions, limits, counters
//                                           (jobs_done, tokens_generated, kv_check_failures,
//                                           shared_prefix_tokens: prompt tokens a request took from
//                                           a running one's KV, n > 1); "kv": the chunk
//                                           store (bytes and chunks per tier and codec, budgets,
//                                           write-backs, errors) or {"restore": "recompute"};
//                                           "scheduler": policy, preemptions (fairness), parks
//                                           (a full KV pool), each charged to a client: clients
//                                           ("preempted", "parked", counters,
//                                           tokens served, tokens/s, share, "latency": {window_s,
//                                           requests, ttft_ms and e2e_ms {p50, p90, p99}} over the
//                                           last minute). Admins see all;
//                                           others see their own clients, their own sessions'
//                                           slots ({index, busy, cells, session}), every other
//                                           slot as {index, session: null}, and aggregates
//                                           (queue, counters, sessions.total, kv totals; no
//                                           kv.last_error, which names a session);
//                                           "connections": open, users (distinct uids),
//                                           refused_global, refused_per_user, the two limits
//   GET    /v1/models                       OpenAI-compatible model list ("created": the model
//                                           file's modification time)
//   GET    /v1/models/{id}                  one model (404 model_not_found for another id)
//   POST   /v1/completions                  OpenAI-compatible text completion (stream or not)
//   POST   /v1/chat/completions             OpenAI-compatible chat completion (stream or not):
//                                           messages (tool_calls, tool results), tools +
//                                           tool_choice + parallel_tool_calls (answers with
//                                           message.tool_calls, streamed as delta.tool_calls by
//                                           index, finish_reason "tool_calls"), response_format
//                                           (json_object, json_schema), grammar (GBNF), n (1-16:
//                                           the later choices share choice 0's prompt KV;
//                                           usage.choices_cached_tokens),
//                                           logprobs + top_logprobs, presence/frequency_penalty,
//                                           logit_bias, stream_options.include_usage (a last chunk
//                                           with choices: [] and the usage); the fields each
//                                           endpoint takes: chat_request.h, README's table;
//                                           extension: "session": ID appends the last (user)
//                                           message, or the tool messages that end `messages`, to
//                                           that session; tools (if sent) become the session's
//   POST   /v1/embeddings                   OpenAI-compatible embeddings (api_embeddings.cpp):
//                                           {"input": string | [string] | [token id] |
//                                           [[token id]], "model"?: the served model's id or
//                                           "default" (else 404 model_not_found), "encoding_format"?:
//                                           "float" | "base64" (little-endian float32), "user"?
//                                           (advisory, ignored)} -> {"object": "list", "data":
//                                           [{"object": "embedding", "index", "embedding"}],
//                                           "model", "usage": {"prompt_tokens", "total_tokens"}};
//                                           pooled with the model's pooling (mean where it has
//                                           none), L2-normalized. "dimensions" and any other field:
//                                           400 naming it. Empty input or string, over 2048 inputs
//                                           or 65536 tokens, an input over the embedding context:
//                                           400 param "input"
//   POST   /v1/responses                    OpenAI's Responses API (stream or not; api_responses.cpp,
//                                           responses_request.h): input (a string, or message,
//                                           function_call and function_call_output items),
//                                           instructions, tools (flat function tools), tool_choice,
//                                           parallel_tool_calls, text.format (text | json_object |
//                                           json_schema), max_output_tokens, temperature, top_p,
//                                           previous_response_id, store; llmd's seed, top_k, min_p,
//                                           ignore_eos, priority, app. Streamed as named events (event: TYPE,
//                                           data with type and sequence_number): response.created,
//                                           .in_progress, .output_item.added, .content_part.added,
//                                           .output_text.delta, .output_text.done, .content_part.done,
//                                           .output_item.done (function calls: .output_item.added,
//                                           .function_call_arguments.delta/.done, .output_item.done),
//                                           then response.completed or response.incomplete; an error
//                                           after the first event: "error" then response.failed.
//                                           A stored response (store not false) is a turn of a
//                                           session of the caller's ("session" in it): a new
//                                           conversation creates one (instructions as its system
//                                           prompt), previous_response_id takes that session's next
//                                           turn with its KV, or, naming an older response, a fork
//                                           of it rewound there; tools become the session's,
//                                           function_call_output items (with
//                                           previous_response_id) are its tool results. What a
//                                           session turn cannot take (several input items, calls
//                                           written by the caller, other instructions) runs
//                                           statelessly on the stored history:
//                                           "store": false in the response; an explicit
//                                           "store": true is then a 400 naming the field. A
//                                           follow-up that raced another turn of the same
//                                           conversation: 409 (its id was numbered for the session
//                                           as it was; TurnRequest::expect_messages).
//   GET    /v1/responses/{id}               a stored response (its answer as the session holds it;
//                                           usage null); 404 for another uid's or one not stored
//   POST   /v1/sessions                     {"system_prompt"?, "app"?, "overflow"?} (another field:
//                                           400 naming it) -> 201 {"id", ...}; app as
//                                           a request's (below), else 400; id "ses_" + 24 hex
//                                           digits from getrandom(2)
//   GET    /v1/sessions                     the caller's sessions (all of them for admins)
//   GET    /v1/sessions/{id}                metadata, "resident", "kv" (its stored chunks: tokens
//                                           covered, per tier, codec mix) and messages
//   DELETE /v1/sessions/{id}
//   POST   /v1/sessions/{id}/messages       {"content" | "tool_results": [{"tool_call_id"?,
//                                           "content"}], "max_tokens"?, sampling?, "stream"? = true,
//                                           "response_format"?, "grammar"?, "tools"? (the session's
//                                           tools from now on, stored; [] clears them; a change
//                                           re-renders the session), "tool_choice"? (default auto
//                                           where the session has tools), "parallel_tool_calls"?};
//                                           tool_results only after an answer (else 400 "messages")
//   POST   /v1/sessions/{id}/prewarm        brings the session's KV into a slot ahead of its next
//                                           message (background work of the caller's client);
//                                           200 {"id", "tokens", "resident_tokens",
//                                           "loaded_tokens", "restored_tokens", "timings"} once it
//                                           is there (busy meanwhile: 409; no body fields)
//   POST   /v1/sessions/{id}/audit          KV audit (kvstore/kv_audit.h): the history recomputed
//                                           and every stored chunk copy and the resident KV
//                                           compared with it; 200 {"ok", "chunks", "resident", ...}
//                                           (owner or admin; the session is busy meanwhile: 409;
//                                           no body fields: one sent is a 400 naming it)
//   POST   /v1/sessions/{id}/fork           -> 201 the new session (as POST /v1/sessions answers):
//                                           the caller's, with the source's app, system prompt,
//                                           messages and tokens, a new id; no KV is copied. No
//                                           body fields (one sent: 400 naming it). 404 (another
//                                           uid's), 409 (busy), 429 (max-sessions-per-user,
//                                           max-stored-mib-per-user), 507 (disk reserve)
//   POST   /v1/sessions/{id}/rewind         {"drop_last": N} (drop the last N messages) or
//                                           {"keep": K} (keep the first K, the system message
//                                           counted) -> 200 the session with its messages left (as
//                                           GET answers). Whole turns only, never the system
//                                           message; the tokens are cut where the kept turns
//                                           ended, so the same next message gets the same greedy
//                                           answer. 400 naming drop_last / keep (both or neither,
//                                           nothing or too much dropped, half a turn) or an
//                                           unknown field; 404; 409 (busy)
//
// Generating requests may say "priority": "interactive" (default) | "background" and "app": NAME
// (1-64 of A-Z a-z 0-9 . _ -, core::valid_client_name): the scheduler serves client "UID/NAME"
// then (a session turn is the session's app's; a session stored with an app outside that rule,
// before it was checked, keeps working as client "UID").
//
// Request bodies: a JSON object, else 400; a number that does not fit a double (1e999999) is 400
// naming its field ("max_tokens is out of range ..."), never a 500; integer fields take integers
// (or integral floats) within their range.
//
// Generation answers carry "usage" as OpenAI defines it (prompt_tokens: every token the answer is
// conditioned on, a session's history included; prompt_tokens_details.cached_tokens: those of them
// reused rather than computed, resident in a slot or loaded from KV chunks, never more than
// prompt_tokens), llmd's loaded_tokens (the part of cached_tokens loaded from KV chunks) and
// restored_tokens (history recomputed), and "timings" in ms (queue,
// restore = restore_read + restore_decode + restore_recompute, prefill, decode, ttft).
//
// The caller is identified by the connection's kernel credentials, never by the request body.
// Errors use the OpenAI error shape (api_errors.h), with "param" naming the field. A request field
// llmd does not implement is a 400 naming it, never ignored (chat_request.h lists what each
// generating endpoint takes, and the advisory fields: model, user, metadata, store).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/model.h"
#include "core/service.h"
#include "ipc/http_server.h"

namespace llmd::ipc {

struct ApiConfig {
  std::string version;                     // llmd's version
  std::optional<std::uint32_t> admin_gid;  // gid of llmd-admin, if the group exists
};

struct ResponseRun;  // one response being made (api_responses.cpp)

class Api {
 public:
  Api(core::Service& service, const engine::Model& model, ApiConfig config);

  // The HttpServer handler.
  void handle(HttpRequest&& request, std::shared_ptr<Responder> responder);

  // Where /v1/status's "connections" come from (the HttpServer's counts); none: no such section.
  void set_connection_stats(std::function<ConnectionStats()> stats) { connection_stats_ = std::move(stats); }

  // The name clients see in "model" fields (the GGUF's general.name, else the file name).
  const std::string& model_id() const { return model_id_; }

  // The body of GET /v1/status as `caller` sees it (other uids' slots, session ids, scheduler
  // clients and the kv last error are hidden from non-admins). Every front end's status call
  // answers this (D-Bus GetStatus too).
  nlohmann::json status_json(const core::Caller& caller) const;

 private:
  core::Caller caller_of(const PeerCredentials& peer) const;

  void health(const HttpRequest&, Responder&);
  void status(const HttpRequest&, Responder&);
  void models(const HttpRequest&, Responder&);
  void completions(HttpRequest&, std::shared_ptr<Responder>);
  void chat_completions(HttpRequest&, std::shared_ptr<Responder>);
  void embeddings(HttpRequest&, std::shared_ptr<Responder>);  // api_embeddings.cpp
  void create_session(HttpRequest&, std::shared_ptr<Responder>);
  void list_sessions(HttpRequest&, std::shared_ptr<Responder>);
  void get_session(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);
  void delete_session(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);
  void post_message(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);
  void audit_session(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);
  void prewarm_session(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);
  void fork_session(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);    // api_fork.cpp
  void rewind_session(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);  // api_fork.cpp
  // The Responses API (api_responses.cpp).
  void responses(HttpRequest&, std::shared_ptr<Responder>);
  void get_response(HttpRequest&, std::shared_ptr<Responder>, const std::string& id);
  void run_response(const core::Caller& caller, std::shared_ptr<Responder> r, core::TurnRequest turn,
                    std::shared_ptr<ResponseRun> run);

  // Reads the generation fields shared by every generating endpoint into `turn` (max_tokens
  // defaulting to default-max-tokens) and returns the "stream" field.
  Result<std::optional<bool>> read_turn_options(const nlohmann::json& body, core::TurnRequest& turn) const;

  enum class Shape { text_completion, chat_completion, session_message };
  struct TurnOutput {
    bool stream = false;
    Shape shape = Shape::chat_completion;
    bool include_usage = false;  // stream_options.include_usage
    std::uint32_t n = 1;         // choices: n turns of the same request side by side
  };
  void run_turn(const HttpRequest& req, std::shared_ptr<Responder> r, core::TurnRequest turn, TurnOutput out);
  void model(const HttpRequest&, Responder&, const std::string& id);
  nlohmann::json model_json() const;

  core::Service& service_;
  const engine::Model& model_;
  ApiConfig config_;
  std::string model_id_;
  std::int64_t model_created_ = 0;  // the model file's modification time (unix seconds)
  std::function<ConnectionStats()> connection_stats_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

// Response pieces shared by the handlers.
nlohmann::json usage_json(const core::Usage& usage);
nlohmann::json timings_json(const core::Timings& timings, std::int32_t completion_tokens);
std::string openai_finish_reason(engine::FinishReason reason);
nlohmann::json session_json(const core::SessionInfo& info);
nlohmann::json session_detail_json(const core::SessionDetail& detail);  // session_json + "messages"
// What a turn did to its window: {"moved", "dropped_tokens", "dropped_messages", "first_message"}
// (usage.window, and the data of the "window" SSE event).
nlohmann::json window_json(const core::WindowReport& window);
nlohmann::json audit_json(const kvstore::AuditReport& report);
void reply_json(Responder& r, unsigned status, const nlohmann::json& body);

}  // namespace llmd::ipc
