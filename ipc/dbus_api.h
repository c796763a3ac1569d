// The D-Bus front end: name org.llmd.LLM1, object /org/llmd/LLM1, interface org.llmd.LLM1, on the
// bus the `bus` setting names (the system bus for the system service, the session bus in per-user
// mode), on the daemon's io thread (dbus_connection.h). Errors are org.llmd.LLM1.Error.* (the
// mapping: dbus_errors.h).
//
// Identity: the caller is the uid (and groups, for the llmd-admin check) that the bus daemon
// reports for the sending connection (GetConnectionCredentials, asked asynchronously once per
// client connection and kept until it leaves the bus), never anything in a message. Ownership is
// the socket's: another uid's session or request is NotFound; root and llmd-admin see all.
//
// Methods (interface org.llmd.LLM1):
//   CreateSession(s system_prompt, s app) -> (s id)          "" = none; app as Generate's option
//       (1-64 of A-Z a-z 0-9 . _ -), else InvalidArgument; id "ses_" + 24 hex digits (getrandom)
//   DeleteSession(s id) -> ()                                 Busy while a turn runs on it
//   ForkSession(s id) -> (s new_id)                          a new session of the caller's with the
//       source's app, system prompt, messages and tokens (Service::fork_session; no KV copied).
//       NotFound (another uid's), Busy, QuotaExceeded (max-sessions-per-user,
//       max-stored-mib-per-user), NoSpace, Unavailable
//   RewindSession(s id, a{sv} options) -> (u messages, u tokens)   cuts the session back to edit
//       or regenerate a turn (Service::rewind_session); options, as the HTTP body's: drop_last u
//       (drop the last N messages) or keep u (keep the first K, the system message counted),
//       exactly one, any integer type. Whole turns only, never the system message. Answers what
//       is left. InvalidArgument naming the option (unknown, both or neither, nothing or too much
//       dropped, half a turn), NotFound, Busy, Unavailable
//   PrewarmSession(s id) -> (u tokens, u resident, u loaded, u restored)   brings the session's KV
//       into a slot ahead of its next message (Service::prewarm_session; background work of the
//       caller's client); replies once it is there: the session's tokens, and how many of them
//       were resident already, loaded from KV chunks, recomputed. NotFound, Busy, QuotaExceeded
//       (max-in-flight), Unavailable
//   ListSessions() -> (aa{sv} sessions)                       the caller's (an admin's: everyone's),
//       keys: id s, uid u, app s, system_prompt s ("" = none), created_ms x, updated_ms x,
//       tokens u, messages u, busy b, resident b
//   Generate(s session, s prompt, a{sv} options) -> (o request)
//       session "": a one-off answer to `prompt` as a user message (option raw = true: `prompt`
//       continued as plain text, like /v1/completions); else `prompt` is the session's next user
//       message. Options, with the HTTP API's names and checks (turn_options.h): max_tokens,
//       temperature, top_p, top_k, min_p, seed, stop (s or as), repeat_penalty, ignore_eos,
//       priority ("interactive" | "background"), app, raw. Integers may come as any integer type,
//       numbers as d or an integer. An unknown option, a wrong type or a bad value is
//       InvalidArgument naming the option.
//       Structured output, one-off chats only (session "", raw false): json_schema (s: a JSON
//       Schema object as text, as HTTP's response_format json_schema.schema; "{}" = any JSON
//       object): the answer is JSON valid against it (or finishes "length", cut); grammar (s: a
//       GBNF grammar, llama.cpp's, as HTTP's grammar): the answer follows it. Either is
//       InvalidArgument with raw = true or in a session turn (not supported there yet), together,
//       or when it is not a schema object / a grammar llama.cpp can parse.
//       The reply waits until llmd accepts or rejects the request: a rejection (NotFound, Busy,
//       QuotaExceeded, InvalidArgument, Unavailable) is this call's error, and nothing follows.
//       Accepted, it returns the request's object path /org/llmd/LLM1/request/N; then signals of
//       interface org.llmd.LLM1.Request come from that path, sent to the caller's connection only
//       (unicast: no other client can receive them), in this order:
//         Token(s text)*        pieces of the answer, each whole UTF-8 characters
//         then exactly one of
//         Finished(s finish_reason, a{sv} stats)   finish_reason "stop" | "length" (as OpenAI's);
//             stats: prompt_tokens, completion_tokens, cached_tokens, loaded_tokens,
//             restored_tokens, seed (u) (usage as over HTTP: cached_tokens <= prompt_tokens); queue_ms, restore_ms, restore_read_ms, restore_decode_ms,
//             restore_recompute_ms, prefill_ms, decode_ms, ttft_ms, decode_tokens_per_second (d)
//         Failed(s error_name, s message)   an org.llmd.LLM1.Error.* name: Cancelled (Cancel, the
//             caller left, shutdown), QuotaExceeded (the session is full), Failed (saving) ...;
//             a failed session turn is not saved.
//       The request object (introspectable, interface org.llmd.LLM1.Request) exists from the
//       reply until its last signal.
//   Cancel(o request) -> ()    the caller's own requests (same uid; admins: any), else NotFound.
//       Returns at once; the request ends with Failed(org.llmd.LLM1.Error.Cancelled, ...) within
//       one decode step.
//   GetStatus() -> (s json)    the body of GET /v1/status, as this caller sees it (Api::status_json:
//       a non-admin sees its own sessions' slots, the others' indexes only, its own scheduler
//       clients and totals)
// Properties: Model s, Version s, Slots u (const); ActiveSessions u (turns queued or running, of
// all callers and front ends; a count only, Service::counts(); PropertiesChanged when it changes).
//
// A client that leaves the bus has its requests cancelled (one NameOwnerChanged match for the
// whole bus, set up before the name is requested, so no departure is missed).
//
// Lifecycle: start() connects and asks for the name asynchronously; whether llmd got it, or why
// D-Bus is off (bus unreachable, name taken or not allowed by the bus policy, connection lost),
// comes through DbusEvents. stop_accepting() (shutdown) makes Generate answer Unavailable (so do
// CreateSession, the Service's); running requests go on to their last signal; then close() leaves
// the bus, which releases the name. The name is kept while llmd drains: released earlier, a call
// would meet the system bus policy's AccessDenied (it lets callers reach the owner of
// org.llmd.LLM1 only) or start a bus activation, instead of llmd's own Unavailable.
//
// Thread-safety: io thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "common/result.h"
#include "core/service.h"
#include "ipc/api.h"
#include "ipc/dbus_connection.h"

namespace llmd::ipc {

inline constexpr const char* kBusName = "org.llmd.LLM1";
inline constexpr const char* kBusPath = "/org/llmd/LLM1";
inline constexpr const char* kBusInterface = "org.llmd.LLM1";
inline constexpr const char* kBusRequestInterface = "org.llmd.LLM1.Request";
inline constexpr const char* kBusRequestPrefix = "/org/llmd/LLM1/request";

struct DbusConfig {
  std::string version;                     // the Version property
  std::optional<std::uint32_t> admin_gid;  // gid of llmd-admin, if the group exists
};

struct DbusEvents {
  std::function<void(const std::string& what)> serving;    // the name is llmd's ("org.llmd.LLM1 on ...")
  std::function<void(const std::string& why)> unavailable;  // D-Bus is off from now on, and why
};

class DbusApi {
 public:
  // `api` answers GetStatus and names the model; both outlive this.
  DbusApi(boost::asio::io_context& io, core::Service& service, const Api& api, DbusConfig config, DbusEvents events);
  ~DbusApi();

  // Connects to `bus` ("system", "session" or an address: resolve_bus), publishes the object and
  // asks for the name. An error (for the log) if the bus cannot be reached at all; later failures
  // come through events.unavailable.
  Status start(const std::string& bus);
  // Shutdown: Generate answers Unavailable; running requests continue; the name stays until close().
  void stop_accepting();
  // Nothing waits to be written to the bus (the last signals went out).
  bool flushed() const;
  // Leaves the bus (after the Service is idle and flushed(), or a deadline), releasing the name.
  void close();

 private:
  struct Request {
    core::Service::RequestId id = 0;
    std::string owner;  // the caller's unique bus name: the signals' only destination
    std::uint32_t uid = 0;
    MessageRef call;    // the Generate call, until it is answered
  };
  using CallerFn = std::function<void(MessageRef call, const core::Caller& caller)>;
  struct CredsQuery {
    DbusApi* api = nullptr;
    std::string sender;
    SlotRef slot;
    std::vector<std::pair<MessageRef, CallerFn>> waiting;
  };

  static const sd_bus_vtable* manager_vtable();  // interface org.llmd.LLM1
  static const sd_bus_vtable* request_vtable();  // interface org.llmd.LLM1.Request
  // sd-bus callbacks (userdata: this); defined in dbus_api.cpp and dbus_requests.cpp.
  static int on_create_session(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_create_session_with_options(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_delete_session(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_list_sessions(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_fork_session(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_rewind_session(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_prewarm_session(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_generate(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_cancel(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_get_status(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_get_property(sd_bus* bus, const char* path, const char* interface, const char* property,
                             sd_bus_message* reply, void* self, sd_bus_error* error);
  static int on_find_request(sd_bus* bus, const char* path, const char* interface, void* self, void** found,
                             sd_bus_error* error);
  static int on_name_owner_changed(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_match_installed(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_name_reply(sd_bus_message* m, void* self, sd_bus_error* error);
  static int on_creds(sd_bus_message* m, void* query, sd_bus_error* error);

  // Runs `then` with the sender's identity (now if known, else once the bus says); answers the
  // call PermissionDenied if the bus cannot tell.
  void with_caller(sd_bus_message* call, CallerFn then);
  // A method whose one argument is a session id (s): once the caller is known, `start(caller, id,
  // done)` makes the Service call, and `done(result)` answers the call with `reply(call, value)`
  // (a Status: an empty reply) or the result's error, then wakes the loop. dbus_api.cpp.
  template <typename R, typename Start, typename Reply>
  int on_session_method(sd_bus_message* m, Start start, Reply reply);
  Status read_generate(sd_bus_message* m, core::TurnRequest& turn) const;
  void generate(MessageRef call, const core::Caller& caller, core::TurnRequest turn);
  void emit(const std::string& path, const std::string& owner, const char* member,
            const std::function<int(sd_bus_message*)>& append);
  void client_left(const std::string& name);
  void publish_active();
  // D-Bus is off from now on (deferred: may be called from inside a bus callback).
  void give_up(const std::string& why);
  void wake();

  boost::asio::io_context& io_;
  core::Service& service_;
  const Api& api_;
  DbusConfig config_;
  DbusEvents events_;
  std::string bus_;     // as start() got it, for messages
  std::unique_ptr<BusConnection> conn_;
  std::vector<SlotRef> slots_held_;  // vtables, the match; destroyed before conn_
  std::map<std::string, core::Caller> callers_;                   // by unique name
  std::map<std::string, std::unique_ptr<CredsQuery>> creds_queries_;  // by unique name
  std::map<std::uint64_t, Request> requests_;                       // by N of .../request/N
  std::uint64_t next_request_ = 0;
  bool stopping_ = false;
  bool gave_up_ = false;
  std::uint32_t active_published_ = 0;
  bool active_posted_ = false;
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // posted handlers check it
};

}  // namespace llmd::ipc
