// The daemon's core API (see service.h).
#include "core/service.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <set>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "core/chat_turns.h"
#include "common/utf8.h"
#include "kvstore/file_system.h"

namespace llmd::core {
namespace asio = boost::asio;

namespace {

std::vector<engine::ChatMessage> chat_of(const std::vector<kvstore::MessageRecord>& records) {
  std::vector<engine::ChatMessage> out;
  out.reserve(records.size());
  for (const auto& m : records) out.push_back({m.role, m.content});
  return out;
}

SessionInfo info_of(const kvstore::SessionRecord& r) {
  SessionInfo i;
  i.id = r.id;
  i.uid = r.uid;
  i.app = r.app;
  i.system_prompt = r.system_prompt;
  i.created_ms = r.created_ms;
  i.updated_ms = r.updated_ms;
  i.n_tokens = r.n_tokens;
  i.n_messages = r.n_messages;
  return i;
}

Error no_session(const std::string& id) { return Error(Errc::not_found, "no session " + id); }

// What a request gets once the storage thread has stopped (after the shutdown drain): the same
// answer as one refused at the door (HTTP 503, D-Bus Unavailable), never silence.
Error stopping() { return Error(Errc::unavailable, "the daemon is shutting down"); }

// A session holds tokens once a turn has run: its messages then go beyond the system prompt.
bool has_turns(const std::vector<engine::ChatMessage>& chat) {
  return std::any_of(chat.begin(), chat.end(), [](const engine::ChatMessage& m) { return m.role != "system"; });
}

std::string mib(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

bool saved_finish(engine::FinishReason f) {
  return f == engine::FinishReason::eog || f == engine::FinishReason::stop || f == engine::FinishReason::length ||
         f == engine::FinishReason::context_full;
}

}  // namespace

bool valid_client_name(std::string_view name) {
  // ASCII by value: std::isalnum would follow the C locale, and let a locale's letters through.
  const auto allowed = [](char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
           ch == '-';
  };
  return !name.empty() && name.size() <= kMaxClientName && std::all_of(name.begin(), name.end(), allowed);
}

Status check_app(std::string_view app) {
  if (app.empty() || valid_client_name(app)) return {};
  return Error(Errc::invalid_argument, "app must be 1-64 characters of A-Z a-z 0-9 . _ -").with_param("app");
}

std::string client_of(std::uint32_t uid, std::string_view app) {
  std::string client = std::to_string(uid);
  if (valid_client_name(app)) {
    client += '/';
    client += app;
  }
  return client;
}

Caller caller_from(std::uint32_t uid, std::uint32_t gid, std::int32_t pid, const std::vector<std::uint32_t>& groups,
                   std::optional<std::uint32_t> admin_gid) {
  Caller c;
  c.uid = uid;
  c.gid = gid;
  c.pid = pid;
  c.admin = uid == 0;
  if (admin_gid) {
    const std::uint32_t g = *admin_gid;
    c.admin = c.admin || (gid != kNoGid && gid == g) || std::find(groups.begin(), groups.end(), g) != groups.end();
  }
  return c;
}

Error over_limit(const std::string& what, const std::string& key, std::uint64_t value,
                 std::optional<std::uint64_t> actual) {
  return Error(Errc::resource_exhausted, what + " (limit " + key + " = " + std::to_string(value) + ")")
      .with_limit(key, value, actual);
}

std::string token_damage(std::span<const engine::Token> tokens, std::int32_t n_vocab, std::size_t max_tokens) {
  if (tokens.size() > max_tokens) {
    return std::to_string(tokens.size()) + " tokens, more than a session may hold (" + std::to_string(max_tokens) + ")";
  }
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) {
      return "token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) + " is not in the vocabulary";
    }
  }
  return {};
}

Result<std::string> new_session_id() {
  // 96 bits from the kernel's CSPRNG: ids must not be guessable from ids seen before. getrandom
  // blocks only until the pool is first seeded; it is never replaced by a weaker source.
  std::uint8_t bytes[12];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "reading random bytes for a session id (getrandom)");
    }
    got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "ses_";
  for (const std::uint8_t b : bytes) {
    id += kHex[b >> 4];
    id += kHex[b & 15];
  }
  return id;
}

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Service::Service(asio::io_context& io, const engine::Model& model, const engine::Tokenizer& tokenizer,
                 std::uint32_t max_session_tokens, EngineWorker& worker, TaskThread& storage, kvstore::SessionStore& store,
                 ServiceLimits limits)
    : io_(io), model_(model), tok_(tokenizer), max_session_tokens_(max_session_tokens), worker_(worker), storage_(storage), store_(store),
      limits_(limits) {}

Status Service::load() {
  auto all = store_.list();
  if (!all) return all.error();
  for (const auto& r : *all) index_[r.id] = {r.uid, false, r.app, r.n_bytes};
  if (chunks_) {
    std::set<std::string> ids;
    for (const auto& r : *all) ids.insert(r.id);
    chunks_->retain_only(std::move(ids));
  }
  return {};
}

bool Service::visible(const Caller& caller, const std::string& id) const {
  auto it = index_.find(id);
  return it != index_.end() && (caller.admin || it->second.uid == caller.uid);
}

std::uint32_t Service::sessions_of(std::uint32_t uid) const {
  std::uint32_t n = 0;
  for (const auto& [id, e] : index_) n += e.uid == uid ? 1 : 0;
  return n;
}

std::uint64_t Service::stored_bytes_of(std::uint32_t uid) const {
  std::uint64_t n = 0;
  for (const auto& [id, e] : index_) n += e.uid == uid ? e.bytes : 0;
  return n;
}

Status Service::check_stored_bytes(std::uint32_t uid) const {
  const std::uint64_t bytes = stored_bytes_of(uid);
  if (bytes < limits_.max_stored_bytes_per_user) return {};
  return over_limit("uid " + std::to_string(uid) + "'s sessions hold " + std::to_string(bytes) + " bytes; delete some first",
                    "max-stored-mib-per-user", limits_.max_stored_bytes_per_user >> 20, bytes >> 20);
}

Error Service::storage_error(const Error& e, const std::string& what) const {
  if (e.code() != Errc::no_space) return e;
  return Error(Errc::no_space,
               what + ": llmd's storage is full (" + e.message() + "); an administrator must free space in " +
                   (state_dir_.empty() ? std::string("the state directory") : state_dir_),
               e.detail());
}

Status Service::check_disk_reserve() const {
  if (state_dir_.empty() || limits_.disk_reserve_bytes == 0) return {};
  const auto free = kvstore::free_bytes_at(state_dir_);
  if (!free) return {};  // the write itself will tell
  const std::uint64_t free_bytes = *free;
  if (free_bytes >= limits_.disk_reserve_bytes) return {};
  return Error(Errc::no_space, "llmd's storage is full: the file system of " + state_dir_ + " has " + mib(free_bytes) +
                                   " free, less than the " + mib(limits_.disk_reserve_bytes) +
                                   " llmd keeps in reserve; nothing was saved or generated, an administrator must "
                                   "free space there (limit disk-reserve-mib = " +
                                   std::to_string(limits_.disk_reserve_bytes >> 20) + ")")
      .with_limit("disk-reserve-mib", limits_.disk_reserve_bytes >> 20, free_bytes >> 20);
}

std::uint32_t Service::in_flight_of(std::uint32_t uid) const {
  std::uint32_t n = 0;
  for (const auto& [id, f] : in_flight_) n += f.uid == uid ? 1 : 0;
  return n;
}

void Service::create_session(const Caller& caller, std::optional<std::string> system_prompt, std::string app,
                             std::function<void(Result<SessionInfo>)> done) {
  if (shutting_down_) return done(stopping());
  if (sessions_of(caller.uid) >= limits_.max_sessions_per_user) {
    return done(over_limit("uid " + std::to_string(caller.uid) + " has " +
                               std::to_string(limits_.max_sessions_per_user) + " sessions stored already",
                           "max-sessions-per-user", limits_.max_sessions_per_user, sessions_of(caller.uid)));
  }
  if (auto st = check_stored_bytes(caller.uid); !st) return done(st.error());
  if (system_prompt && (system_prompt->size() > limits_.max_message_bytes || !engine::is_valid_utf8(*system_prompt))) {
    return done(Error(Errc::invalid_argument,
                      "system_prompt must be valid UTF-8 of at most " + std::to_string(limits_.max_message_bytes) +
                          " bytes")
                    .with_param("system_prompt"));
  }
  if (auto st = check_app(app); !st) return done(st.error());
  if (auto st = check_disk_reserve(); !st) return done(st.error());
  auto id = new_session_id();
  if (!id) return done(id.error());
  kvstore::SessionRecord rec;
  rec.id = std::move(*id);
  rec.uid = caller.uid;
  rec.app = std::move(app);
  rec.system_prompt = std::move(system_prompt);
  rec.created_ms = rec.updated_ms = unix_ms();
  rec.model_id = model_.info().fingerprint;
  index_[rec.id] = {caller.uid, true, rec.app, rec.system_prompt ? rec.system_prompt->size() : 0};  // busy until stored
  auto cb = std::make_shared<std::function<void(Result<SessionInfo>)>>(std::move(done));
  const bool queued = storage_.post([this, rec, cb]() mutable {
    std::vector<kvstore::MessageRecord> msgs;
    if (rec.system_prompt) msgs.push_back({"system", *rec.system_prompt, rec.created_ms});
    auto st = store_.create(rec, msgs, {});
    rec.n_messages = static_cast<std::uint32_t>(msgs.size());
    asio::post(io_, [this, rec = std::move(rec), st, cb]() {
      if (!st) {
        index_.erase(rec.id);
        return (*cb)(storage_error(st.error(), "the session was not created"));
      }
      index_[rec.id].busy = false;
      (*cb)(info_of(rec));
    });
  });
  if (!queued) {
    index_.erase(rec.id);
    (*cb)(stopping());
  }
}

void Service::list_sessions(const Caller& caller, std::function<void(Result<std::vector<SessionInfo>>)> done) {
  const std::optional<std::uint32_t> uid = caller.admin ? std::nullopt : std::optional<std::uint32_t>(caller.uid);
  auto cb = std::make_shared<std::function<void(Result<std::vector<SessionInfo>>)>>(std::move(done));
  const bool queued = storage_.post([this, uid, cb]() {
    auto list = store_.list(uid);
    asio::post(io_, [this, list = std::move(list), cb]() mutable {
      if (!list) return (*cb)(list.error());
      const auto stats = worker_.stats();
      std::vector<SessionInfo> out;
      for (const auto& r : *list) {
        auto it = index_.find(r.id);
        if (it == index_.end()) continue;  // deleted meanwhile
        SessionInfo i = info_of(r);
        i.busy = it->second.busy;
        for (const auto& s : stats.slots) i.resident = i.resident || s.session_id == r.id;
        if (chunks_) i.kv = chunks_->residency(r.id);
        out.push_back(std::move(i));
      }
      (*cb)(std::move(out));
    });
  });
  if (!queued) (*cb)(stopping());
}

void Service::get_session(const Caller& caller, const std::string& id, std::function<void(Result<SessionDetail>)> done) {
  if (!visible(caller, id)) return done(no_session(id));
  auto cb = std::make_shared<std::function<void(Result<SessionDetail>)>>(std::move(done));
  const bool queued = storage_.post([this, id, cb]() {
    auto detail = [&]() -> Result<SessionDetail> {
      auto rec = store_.get(id);
      if (!rec) return rec.error();
      auto msgs = store_.messages(id);
      if (!msgs) return msgs.error();
      return SessionDetail{info_of(*rec), std::move(*msgs)};
    }();
    asio::post(io_, [this, id, detail = std::move(detail), cb]() mutable {
      if (detail) {
        auto it = index_.find(id);
        if (it == index_.end()) return (*cb)(no_session(id));
        detail->info.busy = it->second.busy;
        for (const auto& s : worker_.stats().slots) detail->info.resident = detail->info.resident || s.session_id == id;
        if (chunks_) detail->info.kv = chunks_->residency(id);
      }
      (*cb)(std::move(detail));
    });
  });
  if (!queued) (*cb)(stopping());
}

void Service::delete_session(const Caller& caller, const std::string& id, std::function<void(Status)> done) {
  if (!visible(caller, id)) return done(no_session(id));
  if (index_[id].busy) return done(Error(Errc::busy, "session " + id + " has a request running"));
  index_[id].busy = true;
  auto cb = std::make_shared<std::function<void(Status)>>(std::move(done));
  const bool queued = storage_.post([this, id, cb]() {
    auto st = store_.remove(id);
    asio::post(io_, [this, id, st, cb]() {
      if (st) {
        index_.erase(id);
        worker_.forget_session(id);
        if (chunks_) chunks_->drop_session(id);
      } else if (auto it = index_.find(id); it != index_.end()) {
        it->second.busy = false;
      }
      (*cb)(st);
    });
  });
  if (!queued) {
    index_[id].busy = false;
    (*cb)(stopping());
  }
}

Service::RequestId Service::start_turn(const Caller& caller, TurnRequest request, TurnCallbacks callbacks) {
  const RequestId id = ++next_id_;
  auto reject = [&](Error e) {
    callbacks.rejected(e);
    return id;
  };
  if (shutting_down_) return reject(stopping());
  if (in_flight_.size() >= limits_.max_in_flight) {
    return reject(over_limit("too many requests in flight; try again later", "max-in-flight", limits_.max_in_flight,
                             in_flight_.size()));
  }
  const std::uint32_t may_run =
      limits_.max_running_per_client != 0 ? limits_.max_running_per_client : worker_.n_slots();
  if (in_flight_of(caller.uid) >= may_run + limits_.max_queued_per_client) {
    return reject(over_limit("uid " + std::to_string(caller.uid) + " has " + std::to_string(in_flight_of(caller.uid)) +
                                 " requests running or queued; try again later",
                             "max-queued-per-client", limits_.max_queued_per_client, in_flight_of(caller.uid)));
  }
  if (auto st = check_app(request.app); !st) return reject(st.error());
  if (request.params.max_tokens > static_cast<std::int32_t>(max_session_tokens_)) {
    return reject(Error(Errc::invalid_argument,
                        "max_tokens must be between 1 and the context size (" + std::to_string(max_session_tokens_) + ")")
                      .with_limit("max_tokens", max_session_tokens_, static_cast<std::uint64_t>(request.params.max_tokens)));
  }
  if (auto st = engine::validate_generate(request.params); !st) return reject(st.error());
  std::size_t text_bytes = request.content.size() + request.prompt.size();
  for (const auto& m : request.messages) text_bytes += m.content.size();
  if (text_bytes > limits_.max_message_bytes) {
    return reject(Error(Errc::invalid_argument, "the request's text is larger than " +
                                                    std::to_string(limits_.max_message_bytes) + " bytes"));
  }
  if (request.kind == TurnRequest::Kind::session_message) {
    if (!visible(caller, request.session_id)) return reject(no_session(request.session_id));
    IndexEntry& e = index_[request.session_id];
    if (e.busy) return reject(Error(Errc::busy, "session " + request.session_id + " is busy with another request"));
    if (auto st = check_stored_bytes(e.uid); !st) return reject(st.error());
    // A session stored before apps were checked may carry a name that is not a client name: its
    // turns are the uid's own client's rather than failing.
    request.app = valid_client_name(e.app) ? e.app : std::string();
    if (!engine::is_valid_utf8(request.content)) {
      return reject(Error(Errc::invalid_argument, "content is not valid UTF-8").with_param("content"));
    }
    // Before anything is generated: a turn that could not be saved would be lost after its text
    // was streamed.
    if (auto st = check_disk_reserve(); !st) return reject(st.error());
    e.busy = true;
  }
  InFlight f{std::make_shared<std::atomic<bool>>(false), std::move(callbacks),
             request.kind == TurnRequest::Kind::session_message ? request.session_id : std::string(), false, caller.uid,
             client_of(caller.uid, request.app)};
  in_flight_.emplace(id, std::move(f));
  if (in_flight_observer_) in_flight_observer_();
  const bool queued = storage_.post([this, id, request = std::move(request)]() mutable {
    auto prep = prepare(request);
    asio::post(io_, [this, id, request = std::move(request), prep = std::move(prep)]() mutable {
      prepared(id, std::move(request), std::move(prep));
    });
  });
  if (!queued) {
    auto cb = std::move(in_flight_.at(id).callbacks.rejected);
    drop(id);
    cb(stopping());
  }
  return id;
}

Result<Service::Prepared> Service::prepare(const TurnRequest& request) {
  Prepared p;
  switch (request.kind) {
    case TurnRequest::Kind::completion: {
      auto t = prompt_tokens(tok_, request.prompt);
      if (!t) return t.error();
      p.input = std::move(*t);
      break;
    }
    case TurnRequest::Kind::chat: {
      auto t = conversation_tokens(model_, tok_, request.messages, /*add_assistant=*/true);
      if (!t) return t.error();
      p.input = std::move(*t);
      break;
    }
    case TurnRequest::Kind::session_message: {
      auto rec = store_.get(request.session_id);
      if (!rec) return rec.error();
      auto msgs = store_.messages(request.session_id);
      if (!msgs) return msgs.error();
      auto toks = store_.tokens(request.session_id);
      std::string damage;  // why the stored tokens cannot be used, if they cannot
      if (!toks) {
        if (toks.error().code() != Errc::corrupt) return toks.error();
        damage = toks.error().message();
        toks = std::vector<engine::Token>();
      } else {
        // A turn that filled the context ends with one sampled token beyond it (never decoded).
        damage = token_damage(*toks, tok_.n_vocab(), max_stored_tokens(max_session_tokens_));
      }
      const auto chat = chat_of(*msgs);
      if (rec->model_id != model_.info().fingerprint || !damage.empty()) {
        // Tokens of another model, or damaged ones: re-derive them from the messages. (A model
        // change or a damaged token sequence invalidates a session's KV and tokens, never the
        // session; its KV chunks no longer match the new tokens and are not used.)
        std::vector<engine::Token> rebuilt;
        if (has_turns(chat)) {
          auto t = conversation_tokens(model_, tok_, chat, /*add_assistant=*/false);
          if (!t) return t.error();
          rebuilt = std::move(*t);
        }
        LLMD_TRY_STATUS(store_.replace_tokens(request.session_id, rebuilt, model_.info().fingerprint));
        if (!damage.empty()) {
          spdlog::warn("session {}: its stored tokens are damaged ({}); re-derived {} tokens from its {} messages",
                       request.session_id, damage, rebuilt.size(), chat.size());
        }
        *toks = std::move(rebuilt);
      }
      auto t = turn_tokens(model_, tok_, chat, toks->size(), request.content);
      if (!t) return t.error();
      p.history = std::move(*toks);
      p.input = std::move(*t);
      break;
    }
  }
  if (p.input.empty()) return Error(Errc::invalid_argument, "the prompt is empty");
  const char* field = request.kind == TurnRequest::Kind::completion ? "prompt"
                      : request.kind == TurnRequest::Kind::chat     ? "messages"
                                                                    : "content";
  LLMD_TRY_STATUS(check_context(p.history.size(), p.input.size(), max_session_tokens_, SeqUse::turn, field));
  return p;
}

void Service::prepared(RequestId id, TurnRequest request, Result<Prepared> prep) {
  auto it = in_flight_.find(id);
  if (it == in_flight_.end()) return;
  InFlight& f = it->second;
  if (!prep) {
    auto cb = std::move(f.callbacks.rejected);
    drop(id);
    cb(prep.error());
    return;
  }
  if (f.cancelled->load()) {
    auto cb = std::move(f.callbacks.rejected);
    drop(id);
    cb(Error(Errc::cancelled, "cancelled before it started"));
    return;
  }
  if (limits_.max_prompt_tokens != 0 && prep->input.size() > limits_.max_prompt_tokens) {
    auto cb = std::move(f.callbacks.rejected);
    drop(id);
    cb(over_limit("the request brings " + std::to_string(prep->input.size()) + " new tokens", "max-prompt-tokens",
                  limits_.max_prompt_tokens, prep->input.size()));
    return;
  }
  f.accepted = true;
  f.callbacks.accepted();

  Job job;
  job.id = id;
  job.session_id = f.session_id;
  job.history = std::move(prep->history);
  job.input = std::move(prep->input);
  job.params = request.params;
  job.cancelled = f.cancelled;
  job.client = f.client;
  job.priority = request.priority;
  job.on_text = [this, id](const std::string& text) {
    asio::post(io_, [this, id, text] {
      auto it2 = in_flight_.find(id);
      if (it2 != in_flight_.end() && it2->second.callbacks.text) it2->second.callbacks.text(text);
    });
  };
  const bool session_turn = request.kind == TurnRequest::Kind::session_message;
  job.on_done = [this, id, session_turn, session = f.session_id, user = std::move(request.content),
                 history = job.history.size(), input = job.input](JobResult r) mutable {
    TurnResult res{r.finish, std::move(r.text), r.usage, r.timings, r.seed, std::move(r.error)};
    if (!session_turn || !saved_finish(res.finish) || r.generated.empty()) {
      if (session_turn && !res.error && res.finish != engine::FinishReason::cancelled) {
        res.error = Error(Errc::resource_exhausted, "the session is full: no room for another token");
      }
      asio::post(io_, [this, id, res = std::move(res)]() mutable { finished(id, std::move(res)); });
      return;
    }
    // Persist before acknowledging: the turn's messages and every token now in the KV. (The
    // storage thread stops only once nothing is in flight, so it takes this; if it did not, the
    // turn would still end, unsaved.)
    auto result = std::make_shared<TurnResult>(std::move(res));  // here again if the task is refused
    const bool queued = storage_.post([this, id, session, user = std::move(user), history, input = std::move(input),
                                       generated = std::move(r.generated), result]() mutable {
      TurnResult turn = std::move(*result);
      const std::int64_t now = unix_ms();
      const std::vector<kvstore::MessageRecord> msgs = {{"user", user, now}, {"assistant", turn.text, now}};
      std::vector<engine::Token> added = std::move(input);
      added.insert(added.end(), generated.begin(), generated.end());
      auto st = store_.append_turn(session, msgs, added, static_cast<std::uint32_t>(history), now);
      std::uint64_t bytes = 0;
      if (!st) {
        turn.error = st.error().code() == Errc::no_space ? storage_error(st.error(), "the turn was not saved")
                                                        : st.error().with_context("saving the turn");
        turn.finish = engine::FinishReason::error;
      } else {
        bytes = msgs[0].content.size() + msgs[1].content.size() + added.size() * sizeof(engine::Token);
      }
      asio::post(io_, [this, id, session, bytes, turn = std::move(turn)]() mutable {
        if (auto e = index_.find(session); e != index_.end()) e->second.bytes += bytes;
        finished(id, std::move(turn));
      });
    });
    if (!queued) {
      result->error = stopping().with_context("the turn was not saved");
      result->finish = engine::FinishReason::error;
      asio::post(io_, [this, id, result] { finished(id, std::move(*result)); });
    }
  };
  if (auto st = worker_.submit(std::move(job)); !st) {
    TurnResult res;
    res.finish = engine::FinishReason::cancelled;
    res.error = st.error();
    finished(id, std::move(res));
  }
}

void Service::audit_session(const Caller& caller, const std::string& id,
                            std::function<void(Result<kvstore::AuditReport>)> done) {
  if (shutting_down_) return done(stopping());
  if (!visible(caller, id)) return done(no_session(id));
  if (in_flight_.size() >= limits_.max_in_flight) {
    return done(over_limit("too many requests in flight; try again later", "max-in-flight", limits_.max_in_flight,
                           in_flight_.size()));
  }
  IndexEntry& e = index_[id];
  if (e.busy) return done(Error(Errc::busy, "session " + id + " is busy with another request"));
  e.busy = true;
  const RequestId rid = ++next_id_;
  const std::string client = client_of(caller.uid, e.app);  // a bad stored name: the uid (as its turns)
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  in_flight_.emplace(rid, InFlight{cancelled, {}, id, true, caller.uid, client});
  if (in_flight_observer_) in_flight_observer_();
  // Every step ends on the io thread with the entry dropped (the session no longer busy) and
  // `done` called once.
  auto finish = std::make_shared<std::function<void(Result<kvstore::AuditReport>)>>(
      [this, rid, done = std::move(done)](Result<kvstore::AuditReport> r) {
        drop(rid);
        done(std::move(r));
      });
  auto on_io = [this, finish](Result<kvstore::AuditReport> r) {
    asio::post(io_, [finish, r = std::move(r)]() mutable { (*finish)(std::move(r)); });
  };
  const bool queued = storage_.post([this, id, rid, client, cancelled, finish, on_io]() {
    auto toks = store_.tokens(id);
    if (!toks) return on_io(toks.error());
    // A history that filled its sequence ends with a sampled token no KV was ever computed for
    // (the turn ended "context_full"): the audit covers what KV can hold.
    if (toks->size() > worker_.max_seq_len()) toks->resize(worker_.max_seq_len());
    auto tokens = std::make_shared<std::vector<engine::Token>>(std::move(*toks));
    asio::post(io_, [this, id, rid, client, cancelled, finish, on_io, tokens]() {
      const std::uint32_t chunk_tokens = chunks_ ? chunks_->options().chunk_tokens : 64;
      if (tokens->empty()) return (*finish)(kvstore::audit_kv(worker_.kv_layout(), {}, {}, chunk_tokens, 0, {}, std::nullopt));
      Job job;
      job.id = rid;
      job.audit_of = id;
      job.input = *tokens;
      job.params.max_tokens = 1;
      job.params.sampling.temperature = 0;
      job.client = client;
      job.cancelled = cancelled;
      job.on_done = [this, id, tokens, chunk_tokens, on_io](JobResult r) {
        if (r.error || !r.audit) {
          return on_io(r.error.value_or(Error(Errc::cancelled, "the audit was cancelled")));
        }
        // The comparison reads chunk files and decodes them: on the storage thread, not the engine's.
        auto capture = std::make_shared<AuditCapture>(std::move(*r.audit));
        const bool compared = storage_.post([this, id, tokens, chunk_tokens, capture, on_io]() {
          std::vector<kvstore::AuditChunkInput> chunks;
          if (chunks_) {
            for (auto& c : chunks_->stored_chunks(id)) {
              kvstore::AuditChunkInput in{c.index, c.n_cells, c.prefix_hash, {}};
              auto add = [&](const char* tier, std::optional<kvstore::StoredCopy>& copy) {
                if (!copy) return;
                if (*copy) {
                  in.copies.push_back({tier, std::move(**copy), {}});
                } else {
                  in.copies.push_back({tier, {}, copy->error().message()});
                }
              };
              add("ram", c.ram);
              add("disk", c.disk);
              chunks.push_back(std::move(in));
            }
          }
          std::optional<kvstore::AuditResidentInput> resident;
          if (capture->resident) {
            resident = kvstore::AuditResidentInput{capture->slot, capture->resident_tokens, capture->resident_state};
          }
          on_io(kvstore::audit_kv(worker_.kv_layout(), *tokens, capture->reference, chunk_tokens,
                                  chunks_ ? chunks_->chain_seed() : 0, chunks, resident));
        });
        if (!compared) on_io(stopping());
      };
      if (auto st = worker_.submit(std::move(job)); !st) (*finish)(st.error());
    });
  });
  if (!queued) (*finish)(stopping());
}

void Service::finished(RequestId id, TurnResult result) {
  auto it = in_flight_.find(id);
  if (it == in_flight_.end()) return;
  auto cb = std::move(it->second.callbacks.done);
  drop(id);
  if (cb) cb(result);
}

void Service::drop(RequestId id) {
  auto it = in_flight_.find(id);
  if (it == in_flight_.end()) return;
  if (!it->second.session_id.empty()) {
    auto s = index_.find(it->second.session_id);
    if (s != index_.end()) s->second.busy = false;
  }
  in_flight_.erase(it);
  if (in_flight_observer_) in_flight_observer_();
  check_idle();
}

void Service::cancel(RequestId id) {
  auto it = in_flight_.find(id);
  if (it != in_flight_.end()) it->second.cancelled->store(true);
}

void Service::begin_shutdown(std::chrono::milliseconds grace, std::function<void()> on_idle) {
  shutting_down_ = true;
  if (on_idle_ && on_idle) {
    // Called again before the drain ended (a second stop signal, a shorter grace): the first
    // caller still learns that it is idle; replacing its callback would leave the daemon running.
    on_idle_ = [first = std::move(on_idle_), then = std::move(on_idle)] {
      first();
      then();
    };
  } else if (on_idle) {
    on_idle_ = std::move(on_idle);
  }
  worker_.request_stop(grace);
  check_idle();
}

void Service::check_idle() {
  if (!shutting_down_ || !on_idle_ || !in_flight_.empty()) return;
  // Whatever the storage thread still has (a deletion, a creation) completes before stop() returns.
  storage_.stop();
  worker_.join();
  auto cb = std::move(on_idle_);
  on_idle_ = nullptr;
  asio::post(io_, std::move(cb));
}

std::optional<std::uint32_t> Service::session_owner(const std::string& id) const {
  auto it = index_.find(id);
  if (it == index_.end()) return std::nullopt;
  return it->second.uid;
}

ServiceCounts Service::counts() const { return {index_.size(), in_flight_.size(), shutting_down_}; }

ServiceStatus Service::status() const {
  ServiceStatus s;
  const ServiceCounts c = counts();
  s.sessions = c.sessions;
  s.in_flight = c.in_flight;
  s.shutting_down = c.shutting_down;
  s.worker = worker_.stats();
  if (chunks_) s.kv = chunks_->stats();
  return s;
}

}  // namespace llmd::core
