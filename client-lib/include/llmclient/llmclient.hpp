// libllmclient for C++: a thin, header-only layer over the C ABI of llmclient.h (read its
// conventions first: they all hold here).
//
//     llmc::Client llmd;                                   // $LLMD_SOCKET or the default socket
//     for (const std::string& token : llmd.stream("Tell me a story")) std::cout << token << std::flush;
//     std::cout << llmd.generate("And then?").text << "\n";
//
// - RAII: Client owns an llmc_client (moves only); TokenStream owns a generation in flight (its
//   destructor cancels it if it did not finish).
// - Errors are exceptions (llmc::Error: the code, llmd's message, HTTP status, param and
//   Retry-After). A C++ caller rarely handles a failure where it happens (the daemon is down, a
//   quota): an exception carries it to where it is handled, with no result to check at each call;
//   and an expected-like type would need C++23 or a home-made one. No exception ever crosses the
//   C library: one thrown by your callback cancels its request and is rethrown by the Client call
//   that ran the callback (generate, process, wait, the stream's iteration).
// - Streaming: a callback (generate, generate_async) or, for the blocking case, an input range of
//   tokens (stream) that runs the client's loop as it is iterated.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llmclient/llmclient.h"

namespace llmc {

class Error : public std::runtime_error {
 public:
  Error(llmc_code code, const std::string& message, int http_status = 0, std::string param = {},
        long retry_after_s = -1)
      : std::runtime_error(message.empty() ? std::string(llmc_strerror(code)) : message),
        code_(code),
        http_status_(http_status),
        param_(std::move(param)),
        retry_after_s_(retry_after_s) {}

  // The last error of `client` (NULL: of this thread's last call without a client).
  static Error last(const llmc_client* client) {
    llmc_error_info e{};
    llmc_last_error_info(client, &e);
    return Error(e.code, e.message, e.http_status, e.param, e.retry_after_s);
  }

  llmc_code code() const noexcept { return code_; }
  int http_status() const noexcept { return http_status_; }    // 0: llmd did not answer
  const std::string& param() const noexcept { return param_; }  // the limit of a quota error
  long retry_after_s() const noexcept { return retry_after_s_; }

 private:
  llmc_code code_;
  int http_status_;
  std::string param_;
  long retry_after_s_;
};

// llmc_gen_params with C++ types: unset optionals leave the choice to llmd.
struct GenParams {
  std::string session;        // continue this session; empty: a one-off answer
  bool completion = false;    // raw text continuation instead of a chat (not with a session)
  std::string system_prompt;  // one-off chats only
  std::optional<std::int32_t> max_tokens;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<std::int32_t> top_k;
  std::optional<std::uint32_t> seed;
  std::vector<std::string> stop;
  bool background = false;  // priority: background (runs on what interactive work leaves)
  std::string app;          // the app name llmd's fair scheduler serves it as
  bool stream = true;       // false: llmd answers once; the token callback then runs once
  bool ignore_eos = false;  // go on past the model's end of text, up to max_tokens
  // Structured output, one-off chats only, at most one (llmc_gen_params): the answer is JSON valid
  // against this JSON Schema (text; "{}": any JSON object), or follows this GBNF grammar.
  std::optional<std::string> json_schema;
  std::optional<std::string> grammar;
};

struct Result {
  llmc_req_id id = 0;
  llmc_code code = LLMC_OK;  // set for generate_async's callback; generate throws instead
  std::string message;
  int http_status = 0;
  std::string error_param;
  long retry_after_s = -1;
  std::string text;
  std::string finish_reason;
  std::string session_id;
  std::int32_t prompt_tokens = 0;
  std::int32_t completion_tokens = 0;
  std::int32_t cached_tokens = 0;
  std::string json;  // llmd's last event or whole answer
  // The model's window: whether its oldest turns were dropped before this answer, and how many.
  bool window_moved = false;
  std::int64_t window_dropped_tokens = 0;
  std::int32_t window_dropped_messages = 0;
  std::int64_t window_first_message = 0;

  explicit operator bool() const noexcept { return code == LLMC_OK; }
  Error error() const { return Error(code, message, http_status, error_param, retry_after_s); }
};

struct Session {
  std::string id;
  std::string app;
  std::optional<std::string> system_prompt;
  std::uint32_t owner_uid = 0;
  std::int64_t created = 0;
  std::int64_t updated = 0;
  std::int32_t n_tokens = 0;
  std::int32_t n_messages = 0;
  bool busy = false;
  bool resident = false;
  std::string overflow;                 // its overflow policy: "error", "drop_oldest"
  std::int64_t window_first_message = 0;  // the model's window: system messages + these on
  std::int32_t dropped_messages = 0;
  std::int64_t dropped_tokens = 0;
};

struct Message {
  std::string role;
  std::string content;
  std::int64_t created = 0;
};

struct SessionDetail {
  Session session;
  std::vector<Message> messages;
  std::string json;  // llmd's answer as is
};

struct DaemonStatus {
  std::string version, state, model;
  std::int32_t slots = 0, slots_busy = 0, running = 0, queued = 0, in_flight = 0;
  std::int64_t sessions = 0;
  double uptime_s = 0;
  std::string json;  // llmd's whole answer as is
};

struct Answer {  // of Client::call
  int status = 0;
  std::string body;
};

namespace detail {

struct FreeC {
  void operator()(void* p) const noexcept { llmc_free(p); }
};
template <typename T>
using CPtr = std::unique_ptr<T, FreeC>;

inline const char* opt(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }

// GenParams as the C struct; the strings stay owned by the GenParams.
class CParams {
 public:
  explicit CParams(const GenParams& g) {
    llmc_gen_params_init(&p_);
    p_.session_id = opt(g.session);
    p_.mode = g.completion ? LLMC_MODE_COMPLETION : LLMC_MODE_CHAT;
    p_.system_prompt = opt(g.system_prompt);
    if (g.max_tokens) p_.max_tokens = *g.max_tokens;
    if (g.temperature) p_.temperature = *g.temperature;
    if (g.top_p) p_.top_p = *g.top_p;
    if (g.top_k) p_.top_k = *g.top_k;
    if (g.seed) p_.seed = *g.seed;
    for (const auto& s : g.stop) stops_.push_back(s.c_str());
    p_.stop = stops_.data();
    p_.n_stop = stops_.size();
    p_.priority = g.background ? LLMC_PRIORITY_BACKGROUND : LLMC_PRIORITY_INTERACTIVE;
    p_.app = opt(g.app);
    p_.stream = g.stream ? 1 : 0;
    p_.ignore_eos = g.ignore_eos ? 1 : 0;
    if (g.json_schema) p_.json_schema = g.json_schema->c_str();
    if (g.grammar) p_.grammar = g.grammar->c_str();
  }
  const llmc_gen_params* get() const { return &p_; }

 private:
  llmc_gen_params p_;
  std::vector<const char*> stops_;
};

inline Result to_result(const llmc_result& r) {
  Result out;
  out.id = r.id;
  out.code = r.code;
  out.message = r.message;
  out.http_status = r.http_status;
  out.error_param = r.error_param;
  out.retry_after_s = r.retry_after_s;
  out.text = r.text;
  out.finish_reason = r.finish_reason;
  out.session_id = r.session_id;
  out.prompt_tokens = r.prompt_tokens;
  out.completion_tokens = r.completion_tokens;
  out.cached_tokens = r.cached_tokens;
  out.json = r.json;
  out.window_moved = r.window_moved != 0;
  out.window_dropped_tokens = r.window_dropped_tokens;
  out.window_dropped_messages = r.window_dropped_messages;
  out.window_first_message = r.window_first_message;
  return out;
}

inline Session to_session(const llmc_session& s) {
  Session out;
  out.id = s.id;
  out.app = s.app;
  if (s.system_prompt != nullptr) out.system_prompt = s.system_prompt;
  out.owner_uid = s.owner_uid;
  out.created = s.created;
  out.updated = s.updated;
  out.n_tokens = s.n_tokens;
  out.n_messages = s.n_messages;
  out.busy = s.busy != 0;
  out.resident = s.resident != 0;
  if (s.overflow != nullptr) out.overflow = s.overflow;
  out.window_first_message = s.window_first_message;
  out.dropped_messages = s.dropped_messages;
  out.dropped_tokens = s.dropped_tokens;
  return out;
}

// Takes ownership of a detail the C API returned.
inline SessionDetail to_detail(llmc_session_detail* raw) {
  const CPtr<llmc_session_detail> d(raw);
  SessionDetail out;
  out.session = to_session(*d->session);
  for (size_t i = 0; i < d->n_messages; ++i) {
    out.messages.push_back({d->messages[i]->role, d->messages[i]->content, d->messages[i]->created});
  }
  out.json = d->json;
  return out;
}

// What the client's callbacks share: the first exception a callback threw, to rethrow later.
struct ClientState {
  llmc_client* c = nullptr;
  std::exception_ptr error;

  void rethrow() {
    if (error) std::rethrow_exception(std::exchange(error, nullptr));
  }
};

// The C callbacks of generate_async: own the C++ callbacks until the done callback.
struct AsyncCallbacks {
  ClientState* state;
  std::function<void(llmc_req_id, std::string_view)> on_token;
  std::function<void(const Result&)> on_done;

  static void token(void* user, llmc_req_id id, const char* text, size_t len) {
    auto* self = static_cast<AsyncCallbacks*>(user);
    if (!self->on_token) return;
    try {
      self->on_token(id, std::string_view(text, len));
    } catch (...) {
      if (!self->state->error) self->state->error = std::current_exception();
      llmc_cancel(self->state->c, id);
    }
  }
  static void done(void* user, const llmc_result* r) {
    std::unique_ptr<AsyncCallbacks> self(static_cast<AsyncCallbacks*>(user));
    if (!self->on_done) return;
    try {
      self->on_done(to_result(*r));
    } catch (...) {
      if (!self->state->error) self->state->error = std::current_exception();
    }
  }
};

}  // namespace detail

class Client;

// The tokens of one generation as an input range: iterating runs the client's loop (other
// requests of the client are served meanwhile). Throws llmc::Error when the generation fails,
// including LLMC_ERR_CANCELLED after Client::interrupt. It must not outlive its Client.
class TokenStream {
  struct Shared {
    std::deque<std::string> tokens;
    bool done = false;
    Result result;
    std::exception_ptr error;  // out of memory in a callback: rethrown by the iteration
  };

 public:
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    using pointer = const std::string*;
    using reference = const std::string&;

    iterator() = default;
    reference operator*() const { return s_->shared_->tokens.front(); }
    pointer operator->() const { return &s_->shared_->tokens.front(); }
    iterator& operator++() {
      s_->shared_->tokens.pop_front();
      s_->fill();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    bool at_end() const { return s_ == nullptr || s_->shared_->tokens.empty(); }
    friend class TokenStream;
    explicit iterator(TokenStream* s) : s_(s) {}
    TokenStream* s_ = nullptr;
  };

  TokenStream(TokenStream&& o) noexcept
      : state_(std::exchange(o.state_, nullptr)), shared_(std::move(o.shared_)), id_(o.id_) {}
  TokenStream& operator=(TokenStream&&) = delete;
  TokenStream(const TokenStream&) = delete;
  ~TokenStream() {
    if (state_ != nullptr && shared_ && !shared_->done) llmc_cancel(state_->c, id_);  // done runs later
  }

  // Waits for the first token.
  iterator begin() {
    fill();
    return iterator(this);
  }
  std::default_sentinel_t end() const { return {}; }

  // After the last token: the whole result (usage, finish reason, ...).
  const Result& result() const { return shared_->result; }
  llmc_req_id id() const { return id_; }

 private:
  friend class Client;
  TokenStream(detail::ClientState* state, std::string_view prompt, const GenParams& params)
      : state_(state), shared_(std::make_shared<Shared>()) {
    const detail::CParams p(params);
    auto* holder = new std::shared_ptr<Shared>(shared_);
    if (llmc_generate_async(state_->c, std::string(prompt).c_str(), p.get(), &on_token, &on_done, holder, &id_) !=
        LLMC_OK) {
      delete holder;
      shared_->done = true;
      throw Error::last(state_->c);
    }
  }

  // No exception may leave a C callback.
  static void on_token(void* user, llmc_req_id, const char* text, size_t len) {
    Shared& s = **static_cast<std::shared_ptr<Shared>*>(user);
    try {
      s.tokens.emplace_back(text, len);
    } catch (...) {
      if (!s.error) s.error = std::current_exception();
    }
  }
  static void on_done(void* user, const llmc_result* r) {
    std::unique_ptr<std::shared_ptr<Shared>> holder(static_cast<std::shared_ptr<Shared>*>(user));
    Shared& s = **holder;
    s.done = true;
    try {
      s.result = detail::to_result(*r);
    } catch (...) {
      s.result.code = r->code != LLMC_OK ? r->code : LLMC_ERR_NOMEM;
      if (!s.error) s.error = std::current_exception();
    }
  }

  // Runs the loop until a token is queued or the generation ended (then throws if it failed).
  void fill() {
    while (shared_->tokens.empty() && !shared_->done) {
      const llmc_code code = llmc_wait(state_->c, -1);
      if (code == LLMC_ERR_CANCELLED) llmc_cancel(state_->c, id_);  // interrupted: it ends, cancelled
      else if (code != LLMC_OK) throw Error::last(state_->c);       // e.g. iterated inside a callback
      state_->rethrow();
    }
    if (shared_->error) std::rethrow_exception(std::exchange(shared_->error, nullptr));
    if (shared_->tokens.empty() && shared_->result.code != LLMC_OK) throw shared_->result.error();
  }

  detail::ClientState* state_;
  std::shared_ptr<Shared> shared_;
  llmc_req_id id_ = 0;
};

class Client {
 public:
  // Connects to llmd at `socket_path` (empty: $LLMD_SOCKET or the default path). Throws Error
  // (LLMC_ERR_UNAVAILABLE when llmd is not running: the message says how to start it).
  explicit Client(const std::string& socket_path = {}) : s_(std::make_unique<detail::ClientState>()) {
    if (llmc_connect(detail::opt(socket_path), &s_->c) != LLMC_OK) throw Error::last(nullptr);
  }
  Client(Client&&) noexcept = default;
  Client& operator=(Client&& o) noexcept {
    if (this != &o) {
      close();
      s_ = std::move(o.s_);
    }
    return *this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() { close(); }

  llmc_client* get() const noexcept { return s_ ? s_->c : nullptr; }
  std::string socket_path() const { return llmc_socket_path(get()); }
  void set_timeout(std::chrono::milliseconds t) { check(llmc_set_timeout(get(), static_cast<long>(t.count()))); }
  void interrupt() noexcept { llmc_interrupt(get()); }  // async-signal-safe
  void clear_interrupt() noexcept { llmc_interrupt_clear(get()); }

  // --- blocking ---

  // Generates an answer; on_token (optional) sees each piece as it arrives.
  Result generate(std::string_view prompt, const GenParams& params = {},
                  const std::function<void(std::string_view)>& on_token = {}) {
    const detail::CParams p(params);
    struct Ctx {
      const std::function<void(std::string_view)>* fn;
      detail::ClientState* state;
    } ctx{&on_token, s_.get()};
    llmc_token_fn tok = [](void* user, llmc_req_id id, const char* text, size_t len) {
      auto* c = static_cast<Ctx*>(user);
      try {
        (*c->fn)(std::string_view(text, len));
      } catch (...) {
        if (!c->state->error) c->state->error = std::current_exception();
        llmc_cancel(c->state->c, id);
      }
    };
    llmc_result* raw = nullptr;
    const llmc_code code =
        llmc_generate(get(), std::string(prompt).c_str(), p.get(), on_token ? tok : nullptr, &ctx, &raw);
    const detail::CPtr<llmc_result> r(raw);
    s_->rethrow();
    if (code != LLMC_OK) throw Error::last(get());
    return detail::to_result(*r);
  }

  // The tokens of a generation as a range (see TokenStream).
  TokenStream stream(std::string_view prompt, const GenParams& params = {}) {
    return TokenStream(s_.get(), prompt, params);
  }

  // Creates a session; returns its id.
  // overflow: "drop_oldest", "error", or empty for llmd's context-overflow.
  std::string create_session(const std::string& system_prompt = {}, const std::string& app = {},
                             const std::string& overflow = {}) {
    char* id = nullptr;
    check(llmc_session_create_ex(get(), detail::opt(system_prompt), detail::opt(app), detail::opt(overflow), &id));
    const detail::CPtr<char> owned(id);
    return id;
  }

  std::vector<Session> sessions() {
    llmc_sessions* raw = nullptr;
    check(llmc_session_list(get(), &raw));
    const detail::CPtr<llmc_sessions> list(raw);
    std::vector<Session> out;
    for (size_t i = 0; i < list->count; ++i) out.push_back(detail::to_session(*list->items[i]));
    return out;
  }

  SessionDetail session(const std::string& id) {
    llmc_session_detail* raw = nullptr;
    check(llmc_session_get(get(), id.c_str(), &raw));
    return detail::to_detail(raw);
  }

  void delete_session(const std::string& id) { check(llmc_session_delete(get(), id.c_str())); }

  // Forks a session (llmc_session_fork); returns the new session's id.
  std::string fork_session(const std::string& id) {
    char* new_id = nullptr;
    check(llmc_session_fork(get(), id.c_str(), &new_id));
    const detail::CPtr<char> owned(new_id);
    return new_id;
  }

  // Prewarms a session (llmc_session_prewarm): its KV is in a slot when this returns. Returns how
  // many of its tokens were loaded from KV chunks or recomputed for it (0: all were resident).
  struct Prewarmed {
    std::uint32_t tokens = 0, loaded = 0, restored = 0;
  };
  Prewarmed prewarm_session(const std::string& id) {
    Prewarmed p;
    check(llmc_session_prewarm(get(), id.c_str(), &p.tokens, &p.loaded, &p.restored));
    return p;
  }

  // Rewinds a session (llmc_session_rewind): drops its last `n` messages, or with Rewind::keep
  // keeps its first `n`; returns the session with the messages left.
  enum class Rewind { drop_last = LLMC_REWIND_DROP_LAST, keep = LLMC_REWIND_KEEP };
  SessionDetail rewind_session(const std::string& id, std::uint32_t n, Rewind how = Rewind::drop_last) {
    llmc_session_detail* raw = nullptr;
    check(llmc_session_rewind(get(), id.c_str(), static_cast<int>(how), n, &raw));
    return detail::to_detail(raw);
  }

  DaemonStatus status() {
    llmc_daemon_status* raw = nullptr;
    check(llmc_status_get(get(), &raw));
    const detail::CPtr<llmc_daemon_status> st(raw);
    return {st->version, st->state,      st->model,    st->slots,     st->slots_busy, st->running,
            st->queued,  st->in_flight, st->sessions, st->uptime_s, st->json};
  }

  // Any other request of llmd's HTTP API. Throws Error for an error answer.
  Answer call(const std::string& method, const std::string& path, const std::string& body = {}) {
    int status = 0;
    char* raw = nullptr;
    const llmc_code code = llmc_call(get(), method.c_str(), path.c_str(), detail::opt(body), &status, &raw);
    const detail::CPtr<char> owned(raw);
    if (code != LLMC_OK) throw Error::last(get());
    return {status, raw != nullptr ? std::string(raw) : std::string()};
  }

  // --- asynchronous (callbacks run inside process(), wait() or a blocking call) ---

  // Starts a generation. on_done runs exactly once, with the result (its code says whether it
  // failed); both callbacks may be empty.
  llmc_req_id generate_async(std::string_view prompt, const GenParams& params,
                             std::function<void(llmc_req_id, std::string_view)> on_token,
                             std::function<void(const Result&)> on_done) {
    const detail::CParams p(params);
    auto cb = std::make_unique<detail::AsyncCallbacks>(
        detail::AsyncCallbacks{s_.get(), std::move(on_token), std::move(on_done)});
    llmc_req_id id = 0;
    check(llmc_generate_async(get(), std::string(prompt).c_str(), p.get(), &detail::AsyncCallbacks::token,
                              &detail::AsyncCallbacks::done, cb.get(), &id));
    cb.release();  // owned by the C callbacks until done
    return id;
  }

  // False if the request already finished.
  bool cancel(llmc_req_id id) { return llmc_cancel(get(), id) == LLMC_OK; }

  int fd() const noexcept { return llmc_fd(get()); }
  long timeout_ms() const noexcept { return llmc_timeout_ms(get()); }
  std::size_t pending() const noexcept { return llmc_pending(get()); }
  void process() {
    check(llmc_process(get()));
    s_->rethrow();
  }
  // Waits for work (at most `timeout`; negative: no limit) and does it. False: interrupted.
  bool wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(-1)) {
    const llmc_code code = llmc_wait(get(), timeout.count() < 0 ? -1L : static_cast<long>(timeout.count()));
    s_->rethrow();
    if (code == LLMC_ERR_CANCELLED) return false;
    check(code);
    return true;
  }

 private:
  void check(llmc_code code) const {
    if (code != LLMC_OK) throw Error::last(get());
  }
  void close() noexcept {
    if (s_ && s_->c != nullptr) llmc_close(std::exchange(s_->c, nullptr));
  }

  std::unique_ptr<detail::ClientState> s_;
};

}  // namespace llmc
