// The daemon's core API, used by the IPC front ends (HTTP, D-Bus): sessions, generation
// turns, cancellation, status. It runs on the io thread and never blocks it: disk work and prompt
// formatting go to the storage thread, inference to the engine thread, and results come back to
// the io thread through the io_context.
//
// Ownership: a session belongs to the uid that created it. Another uid gets not_found for it (its
// existence is not revealed); an admin caller (root, group llmd-admin) sees and manages all.
//
// Durability: a session turn is acknowledged (TurnCallbacks::done with no error) only after its
// messages and tokens are committed to the session store.
//
// Thread-safety: every method is called on the io thread; every callback is invoked on it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/result.h"
#include "engine/chat_template.h"
#include "engine/generation.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "core/answer_stream.h"
#include "core/context_window.h"
#include "core/embed_worker.h"
#include "core/engine_worker.h"
#include "core/task_thread.h"
#include "kvstore/chunk_store.h"
#include "kvstore/kv_audit.h"
#include "kvstore/session_store.h"
#include "scheduler/scheduler.h"

namespace llmd::core {

struct Caller {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;  // primary group; kNoGid where the transport reports only the set of groups (D-Bus)
  std::int32_t pid = 0;
  bool admin = false;  // root or a member of llmd-admin
};

inline constexpr std::uint32_t kNoGid = 0xFFFFFFFF;  // (gid_t)-1

// The caller a front end serves, from the kernel credentials its transport reports (never from a
// request's body): admin if uid is 0, or if admin_gid (the llmd-admin group, when it exists) is
// its gid or one of its groups. Every front end decides ownership with this one rule.
Caller caller_from(std::uint32_t uid, std::uint32_t gid, std::int32_t pid, const std::vector<std::uint32_t>& groups,
                   std::optional<std::uint32_t> admin_gid);

struct SessionInfo {
  std::string id;
  std::uint32_t uid = 0;
  std::string app;
  std::optional<std::string> system_prompt;
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  std::uint32_t n_tokens = 0;
  std::uint32_t n_messages = 0;
  bool busy = false;      // a turn is running
  bool resident = false;  // its KV is in a slot
  kvstore::SessionResidency kv;  // its stored KV chunks (restore=chunks)
  // The model's window over the transcript (core/context_window.h).
  struct Window {
    Overflow overflow = Overflow::drop_oldest;  // the policy its turns follow
    bool overflow_default = true;               // none chosen at creation: context-overflow's
    std::int64_t first_message = 0;             // messages with seq >= this (and system ones) are in it
    std::uint32_t dropped_messages = 0;         // messages outside it
    std::uint64_t dropped_tokens = 0;           // tokens dropped from it over the session's life
  } window;
};

struct SessionDetail {
  SessionInfo info;
  std::vector<kvstore::MessageRecord> messages;
};

struct TurnRequest {
  enum class Kind { session_message, chat, completion };
  Kind kind = Kind::completion;
  std::string session_id;                     // session_message
  std::string content;                        // session_message: the user's message
  // session_message: instead of `content`, the results of the tools the session's last answer
  // called (role "tool", tool_call_id as the call's id); the answer follows them.
  std::vector<engine::ChatMessage> tool_results;
  // session_message: the session's tools from this turn on (empty: none), stored with it; a change
  // re-renders the session's sequence with them (its KV is recomputed from where they appear).
  // nullopt: the session keeps its tools. `chat.tools` is not used in a session turn; `chat`'s
  // tool_choice and parallel_tool_calls apply to the turn.
  std::optional<std::vector<engine::ChatTool>> session_tools;
  // session_message: how many messages (GET /v1/sessions/{id} lists them) the session must hold
  // when the turn is prepared, for a caller that numbered the turn ahead (/v1/responses' ids);
  // another count (a turn or a rewind ran in between) rejects the turn with busy. nullopt: any.
  std::optional<std::uint32_t> expect_messages;
  std::vector<engine::ChatMessage> messages;  // chat
  // chat: tools, a JSON schema or a grammar the answer must follow (engine/chat_template.h); the
  // answer is then parsed (TurnResult::answer, TurnCallbacks::delta). A chat that does not fit the
  // context is shortened as any other (drop_oldest_chat, rendered with these options).
  engine::ChatOptions chat;
  std::string prompt;                         // completion
  engine::GenerateParams params;
  std::string app;  // the app the caller declared (chat, completion; valid_client_name); a session
                    // turn uses the session's
  scheduler::Priority priority = scheduler::Priority::interactive;
  // chat, completion: what happens when the request does not fit the context (default: the
  // config's context-overflow for chat; a completion takes only error). A session turn follows its
  // session's policy: setting it is invalid_argument.
  std::optional<Overflow> overflow;
};

// A token's log-probability as a caller sees it: its text (raw bytes: a piece may be part of a
// UTF-8 character) and the most likely alternatives.
struct TokenChoice {
  engine::Token id = -1;
  std::string text;
  float logprob = 0;
};
struct LogprobEntry {
  engine::Token id = -1;
  std::string text;
  float logprob = 0;
  std::vector<TokenChoice> top;
};

struct TurnResult {
  engine::FinishReason finish = engine::FinishReason::none;
  std::string text;
  // The answer read back from text: content (all of text for a plain answer), reasoning, tool
  // calls (then finish is eog or stop and the caller says "tool_calls").
  engine::ParsedAnswer answer;
  std::vector<LogprobEntry> logprobs;  // per generated token, when asked for (params.top_logprobs)
  Usage usage;
  Timings timings;
  std::uint32_t seed = 0;
  std::optional<Error> error;  // the turn failed after it was accepted (and was not saved)
  WindowReport window;         // whether the window moved before this turn, and how far
};

// What a prewarm did (Service::prewarm_session): the session's KV is now in a slot.
struct PrewarmResult {
  std::uint32_t tokens = 0;    // the session's tokens, all now in its slot's KV
  std::uint32_t resident = 0;  // of them, already in the slot
  std::uint32_t loaded = 0;    // loaded from KV chunks
  std::uint32_t restored = 0;  // recomputed
  Timings timings;
};

struct TurnCallbacks {
  std::function<void()> accepted;                          // valid and queued; text follows
  // Right after accepted, before any text, only when the window moved (optional).
  std::function<void(const WindowReport&)> window;
  std::function<void(const std::string&)> text;            // a piece of the answer
  // Instead of text for an answer that is parsed (TurnRequest::chat constrains it): its pieces.
  std::function<void(const AnswerDelta&)> delta;
  // Each generated token's log-probabilities (when asked for), before the text it is part of.
  std::function<void(const LogprobEntry&)> logprob;
  // Once, when the first token was sampled: the prompt's KV is complete (optional). A request
  // with n > 1 starts its other choices then: they share that KV instead of computing it again.
  std::function<void()> prefilled;
  std::function<void(const TurnResult&)> done;             // after accepted, exactly once
  std::function<void(const Error&)> rejected;              // instead of accepted, exactly once
};

// Per-uid limits name their config key; a request over one is rejected with resource_exhausted
// (HTTP 429) carrying the key as its param, the limit and what the request would have reached;
// its message ends "(limit KEY = VALUE)" for people (see over_limit()).
struct ServiceLimits {
  std::uint32_t max_sessions_per_user = 1024;
  std::uint64_t max_stored_bytes_per_user = 1ull << 30;  // max-stored-mib-per-user
  std::uint32_t max_queued_per_client = 64;    // in flight beyond the ones that may run
  std::uint32_t max_running_per_client = 0;    // 0: as many as run together (`parallel`)
  std::uint32_t max_prompt_tokens = 0;         // 0: up to the context
  std::size_t max_message_bytes = 1u << 20;
  std::uint32_t max_in_flight = 256;          // turns accepted or being prepared, all callers
  std::int32_t default_max_tokens = 256;
  // disk-reserve-mib: below this much free space on the state directory's file system, session
  // creates and turns are refused with no_space before anything runs (0: never).
  std::uint64_t disk_reserve_bytes = 256ull << 20;
  // Stateless requests (chat, completion) reuse the KV of the caller's earlier ones and keep
  // theirs as anonymous prefix entries (Job::anonymous); false: each is computed whole and kept
  // nowhere (prefix-cache-entries-per-user = 0).
  bool prefix_cache = true;
  // One embeddings request (Service::embed): inputs, and their tokens together (400, param
  // "input", beyond either; OpenAI takes 2048 inputs).
  std::uint32_t max_embed_inputs = 2048;
  std::uint64_t max_embed_tokens = 65536;
};

// What the io thread counts as it goes: cheap to read (no engine lock, no walk of the KV store),
// for health checks and the D-Bus ActiveSessions property.
struct ServiceCounts {
  std::size_t sessions = 0;   // stored
  std::size_t in_flight = 0;  // turns and audits accepted or being prepared
  bool shutting_down = false;
};

// The full status (/v1/status, GetStatus): the counts, the engine's stats (it locks the engine)
// and the KV store's (it walks every chunk).
struct ServiceStatus {
  std::size_t sessions = 0;
  std::size_t in_flight = 0;
  bool shutting_down = false;
  WorkerStats worker;
  std::optional<kvstore::StoreStats> kv;  // restore=chunks
};

class Service {
 public:
  using RequestId = std::uint64_t;

  Service(boost::asio::io_context& io, const engine::Model& model, const engine::Tokenizer& tokenizer,
          std::uint32_t max_session_tokens, EngineWorker& worker, TaskThread& storage, kvstore::SessionStore& store,
          ServiceLimits limits);

  // Reads the session index from the store. Call once before the storage thread gets work.
  Status load();
  // restore=chunks: the store of sessions' KV chunks (deleted sessions' chunks go too). Before load().
  void set_chunk_store(kvstore::ChunkStore* chunks) { chunks_ = chunks; }
  // The directory whose file system holds the session store: free space there is checked against
  // limits().disk_reserve_bytes (statvfs) before a session create or a session turn. Unset: no check.
  void set_state_dir(std::string dir) { state_dir_ = std::move(dir); }
  const kvstore::ChunkStoreOptions& chunk_options() const { return chunks_ ? chunks_->options() : no_chunks_; }

  // app: "" (none) or a client name (valid_client_name), else invalid_argument. Sessions stored
  // with another app (before it was checked) keep working; their turns ignore the app.
  // Errors: unavailable (shutting down), resource_exhausted (a per-uid limit), invalid_argument,
  // no_space (below the disk reserve, or the store's file system is full).
  void create_session(const Caller& caller, std::optional<std::string> system_prompt, std::string app,
                      std::function<void(Result<SessionInfo>)> done);
  // The same with the session's overflow policy (nullopt: context-overflow's at each turn).
  // unsupported (400) for sliding, not implemented yet.
  void create_session(const Caller& caller, std::optional<std::string> system_prompt, std::string app,
                      std::optional<Overflow> overflow, std::function<void(Result<SessionInfo>)> done);
  void list_sessions(const Caller& caller, std::function<void(Result<std::vector<SessionInfo>>)> done);
  void get_session(const Caller& caller, const std::string& id, std::function<void(Result<SessionDetail>)> done);
  // busy if a turn is running on it.
  void delete_session(const Caller& caller, const std::string& id, std::function<void(Status)> done);

  // Starts a turn. Rejections (callbacks.rejected): not_found (no such session for this caller),
  // busy (the session has a turn running), unavailable (shutting down), invalid_argument (bad
  // parameters, prompt longer than the context), resource_exhausted (too many turns in flight, or
  // over a per-uid limit: queued requests, prompt tokens, stored bytes), no_space (a session turn
  // while the state directory's file system is below the disk reserve: refused before any text).
  // The turn is scheduled for client "UID" or "UID/APP" (app declared in the request, or the
  // session's if it is a client name).
  //
  // A session whose stored tokens are damaged (not a whole number of tokens, ids outside the
  // vocabulary, more than the context holds) has them re-derived from its messages, as after a
  // model change, and logged; the turn then goes on.
  RequestId start_turn(const Caller& caller, TurnRequest request, TurnCallbacks callbacks);
  // The client went away or asked to stop: the turn ends within one decode step, is not saved, and
  // its callbacks are still called (done with finish=cancelled).
  void cancel(RequestId id);

  // Fork (service_fork.cpp): a new session of the caller's uid (an admin forking another uid's
  // session gets it as its own) with the source's app, system prompt, messages, token sequence and
  // model id, and a new id (new_session_id), stored in one transaction. No KV is copied: the fork
  // is not resident, and its first turn restores what chunks of the same tokens the chunk store
  // gives it, or recomputes. Counts as a session create: errors not_found (no such session for
  // this caller), busy (a turn or another call runs on the source), unavailable,
  // resource_exhausted (max-sessions-per-user; max-stored-mib-per-user with the copy's bytes
  // added), no_space (below the disk reserve, or the store's file system is full).
  void fork_session(const Caller& caller, const std::string& id, std::function<void(Result<SessionInfo>)> done);

  // Rewind (service_fork.cpp): cuts a session back so that an app can edit or regenerate a turn.
  // Exactly one of drop_last (drop the last N messages) and keep (keep the first K messages, the
  // system message counted as GET lists it) is set. The system message is never dropped, and only
  // whole turns are: the messages left end with the system message or an answer (or are none).
  // The token sequence is cut exactly where the kept turns ended (generated tokens as the KV held
  // them), so the same next message gets the same greedy answer as the first time; chunks past the
  // new end are dropped and a resident slot keeps only the kept prefix. Answers the session with
  // the messages left. Errors: not_found, busy, unavailable, invalid_argument with param
  // "drop_last" or "keep" (nothing would be dropped, more than there is, the system message, half
  // a turn).
  struct Rewind {
    std::optional<std::uint32_t> drop_last;
    std::optional<std::uint32_t> keep;
  };
  void rewind_session(const Caller& caller, const std::string& id, Rewind how,
                      std::function<void(Result<SessionDetail>)> done);

  // KV audit (kvstore/kv_audit.h): recomputes the session's history from nothing in a scratch
  // slot (scheduled like a request of the caller's, charged as prompt tokens) and compares every
  // stored chunk copy and the KV resident in its slot with it. The session is busy meanwhile.
  // Errors: not_found, busy, unavailable, resource_exhausted (requests in flight), and what the
  // recompute met.
  void audit_session(const Caller& caller, const std::string& id, std::function<void(Result<kvstore::AuditReport>)> done);

  // Prewarm (Apple's prewarm(), Android's warm-up): brings the session's KV into a slot ahead of
  // its next message — resident already, loaded from chunks, or recomputed — as background work
  // of the caller's client (scheduled and charged like its requests, behind interactive ones).
  // Done when the KV is in place; the next turn then computes only its own message (unless other
  // work takes the slot meanwhile). The session is busy meanwhile. A session with no turns yet,
  // or whose tokens were made by another model, has nothing to bring: tokens 0.
  // Errors: not_found, busy, unavailable, resource_exhausted (requests in flight).
  void prewarm_session(const Caller& caller, const std::string& id, std::function<void(Result<PrewarmResult>)> done);

  // Embeddings (service_embed.cpp): one vector per input of `request` (EmbedWorker::run), computed
  // on the embed thread (set_embeddings) so that neither the io thread nor the engine thread waits.
  // Counts as a request in flight of the caller's (max-in-flight, max-queued-per-client: 429).
  // Errors (done, exactly once, on the io thread): unavailable (shutting down, or embeddings not
  // set up), resource_exhausted (in flight, max-prompt-tokens), invalid_argument with param
  // "input" (no inputs, more than max_embed_inputs, text over max_message_bytes, and what
  // EmbedWorker::run checks), cancelled (cancel(id), or the shutdown's grace ran out).
  RequestId embed(const Caller& caller, EmbedRequest request, std::function<void(Result<EmbedResult>)> done);
  // The embed thread and its worker (both outlive the Service's use of them; the thread is
  // stopped with the storage thread at the end of the shutdown drain). Unset: embed() answers
  // unavailable.
  void set_embeddings(TaskThread* thread, EmbedWorker* worker) {
    embed_thread_ = thread;
    embed_worker_ = worker;
  }
  const EmbedWorker* embed_worker() const { return embed_worker_; }

  // Stops taking turns; running ones get `grace`, then are cancelled; on_idle runs on the io
  // thread once nothing is in flight and the storage thread has written everything. Called again
  // before then (a second stop signal: grace 0), the new grace applies and every on_idle given runs.
  void begin_shutdown(std::chrono::milliseconds grace, std::function<void()> on_idle);

  // Errors of the session calls and turns, beyond those listed with each: unavailable once the
  // storage thread has stopped (after the shutdown drain); every call is still answered once.

  ServiceStatus status() const;  // heavy: see ServiceStatus
  ServiceCounts counts() const;  // cheap: see ServiceCounts
  // Called (on the io thread) whenever the number of turns in flight changes: a front end that
  // publishes it (the D-Bus ActiveSessions property) reads counts().in_flight then.
  void set_in_flight_observer(std::function<void()> observer) { in_flight_observer_ = std::move(observer); }
  std::optional<std::uint32_t> session_owner(const std::string& id) const;
  const ServiceLimits& limits() const { return limits_; }
  // context-overflow and context-fill-target (core/context_window.h); a turn takes them when it starts.
  const WindowConfig& window_config() const { return window_config_; }
  void set_window_config(const WindowConfig& config) { window_config_ = config; }
  void set_limits(const ServiceLimits& limits) { limits_ = limits; }
  std::uint32_t max_session_tokens() const { return max_session_tokens_; }
  std::uint32_t slots() const { return worker_.n_slots(); }  // fixed at construction
  std::uint32_t parallel() const { return worker_.max_running(); }  // fixed at construction

 private:
  struct IndexEntry {
    std::uint32_t uid = 0;
    bool busy = false;
    std::string app;
    std::uint64_t bytes = 0;  // stored messages and tokens
  };
  struct InFlight {
    std::shared_ptr<std::atomic<bool>> cancelled;
    TurnCallbacks callbacks;
    std::string session_id;  // empty for one-off completions
    bool accepted = false;
    std::uint32_t uid = 0;
    std::string client;  // for the scheduler
    std::optional<AnswerStream> answer;  // a parsed answer (TurnRequest::chat constrains it)
  };
  struct Prepared {
    std::vector<engine::Token> history;
    std::vector<engine::Token> input;
    // Session turns: what the save commits beside the turn (core/context_window.h).
    std::uint32_t stored_tokens = 0;  // the stored sequence's length the turn was planned on
    std::uint32_t user_token_end = 0;
    kvstore::WindowChange change;
    WindowReport window;
    std::uint64_t lineage = 0;   // the history's KV lineage (Job::lineage)
    std::size_t history_new = 0;  // Job::history_new
    std::optional<Slide> slide;  // a sliding move (Job::slide)
    // chat: what the answer must follow and how it is read back.
    engine::GrammarParams grammar;
    engine::AnswerSyntax syntax;
    std::vector<std::string> stops;
    std::vector<engine::Token> shown_special;  // GenerateParams::shown_special
  };

  bool visible(const Caller& caller, const std::string& id) const;
  std::uint32_t sessions_of(std::uint32_t uid) const;
  std::uint64_t stored_bytes_of(std::uint32_t uid) const;
  Status check_stored_bytes(std::uint32_t uid) const;  // resource_exhausted at max-stored-mib-per-user
  Status check_disk_reserve() const;                   // no_space below disk-reserve-mib
  // A write that found the store full, said so to the caller: "WHAT: llmd's storage is full (...)".
  // Other errors are returned as they are.
  Error storage_error(const Error& e, const std::string& what) const;
  std::uint32_t in_flight_of(std::uint32_t uid) const;
  // An audit or prewarm of a session may start: not shutting down, the caller's (or an admin's),
  // room in flight, not busy; then the session is marked busy.
  Status begin_session_job(const Caller& caller, const std::string& id);
  Result<Prepared> prepare(const TurnRequest& request, const WindowConfig& window);  // storage thread
  Result<Prepared> prepare_session(const TurnRequest& request, const WindowConfig& window);  // storage thread
  void prepared(RequestId id, TurnRequest request, Result<Prepared> prep);
  void finished(RequestId id, TurnResult result);
  LogprobEntry logprob_entry(const engine::TokenLogprob& lp) const;
  void drop(RequestId id);
  void check_idle();
  void cancel_embeds_after(std::chrono::milliseconds grace);  // service_embed.cpp

  boost::asio::io_context& io_;
  const engine::Model& model_;
  const engine::Tokenizer& tok_;
  const std::uint32_t max_session_tokens_;  // longest a session (or prompt + answer) may be
  EngineWorker& worker_;
  TaskThread& storage_;
  kvstore::SessionStore& store_;  // storage thread only (after load())
  kvstore::ChunkStore* chunks_ = nullptr;
  kvstore::ChunkStoreOptions no_chunks_;
  std::string state_dir_;
  ServiceLimits limits_;
  WindowConfig window_config_;

  std::map<std::string, IndexEntry> index_;
  std::map<RequestId, InFlight> in_flight_;
  RequestId next_id_ = 0;
  bool shutting_down_ = false;
  std::function<void()> on_idle_;
  std::function<void()> in_flight_observer_;
  std::unique_ptr<boost::asio::steady_timer> idle_timer_;
  TaskThread* embed_thread_ = nullptr;
  EmbedWorker* embed_worker_ = nullptr;  // embed thread only (but its config)
  std::set<RequestId> embeds_;           // embeddings requests in in_flight_
  std::unique_ptr<boost::asio::steady_timer> embed_grace_;
};

// The one app-name rule. A name a client may declare for its app (in a request, or for a session
// at its creation), or a weight entry names: 1-64 of A-Z a-z 0-9 . _ - (ASCII, whatever the
// locale). Every front end leaves the check to the Service (check_app); the config checks weight
// entries with it.
inline constexpr std::size_t kMaxClientName = 64;
bool valid_client_name(std::string_view name);
// A declared app: "" (none) or a valid_client_name, else invalid_argument with param "app".
Status check_app(std::string_view app);
// The scheduler's client for a uid and an app: "UID/APP", or "UID" when app is not a client name
// ("", or a session's app stored before the rule was checked, whose turns stay the uid's own).
std::string client_of(std::uint32_t uid, std::string_view app);

// A per-uid limit was reached: resource_exhausted, "WHAT (limit KEY = VALUE)", with param KEY,
// limit VALUE and actual `actual` (what the caller has or would have reached, in the key's unit).
Error over_limit(const std::string& what, const std::string& key, std::uint64_t value,
                 std::optional<std::uint64_t> actual = std::nullopt);

// Why a session's stored token sequence cannot be what its messages produced: "" when it can be
// (every id in [0, n_vocab), at most max_tokens of them).
std::string token_damage(std::span<const engine::Token> tokens, std::int32_t n_vocab, std::size_t max_tokens);

// A new session id: "ses_" and 24 lowercase hex digits, 96 bits from the kernel's random source
// (getrandom(2)). io_error if the kernel gives none; never a predictable fallback.
Result<std::string> new_session_id();
std::int64_t unix_ms();

}  // namespace llmd::core
