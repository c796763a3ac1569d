// The daemon's core API (see service.h): construction, limits, turns, the drain and status. Session
// calls and audits: service_sessions.cpp; the shared rules: service_rules.cpp.
#include "core/service.h"

#include <algorithm>
#include <set>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "core/chat_turns.h"
#include "core/service_internal.h"
#include "common/utf8.h"
#include "kvstore/file_system.h"

namespace llmd::core {
namespace asio = boost::asio;
using namespace detail;

namespace {

bool saved_finish(engine::FinishReason f) {
  return f == engine::FinishReason::eog || f == engine::FinishReason::stop || f == engine::FinishReason::length ||
         f == engine::FinishReason::context_full;
}

// The overflow a request may ask for: a session turn follows its session's policy; a completion
// (a raw prompt: no turns to drop) takes only error; sliding needs a session.
Status check_turn_overflow(const TurnRequest& request) {
  if (!request.overflow) return {};
  if (request.kind == TurnRequest::Kind::session_message) {
    return Error(Errc::invalid_argument,
                 "overflow is a session's own setting, chosen when it is created; a session turn cannot set it")
        .with_param("overflow");
  }
  LLMD_TRY_STATUS(check_stateless_overflow(*request.overflow));
  if (request.kind == TurnRequest::Kind::completion && *request.overflow != Overflow::error) {
    return Error(Errc::invalid_argument, "a completion's prompt has no turns to drop: overflow must be \"error\"")
        .with_param("overflow");
  }
  return {};
}

}  // namespace

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
      limits_.max_running_per_client != 0 ? limits_.max_running_per_client : worker_.max_running();
  if (in_flight_of(caller.uid) >= may_run + limits_.max_queued_per_client) {
    return reject(over_limit("uid " + std::to_string(caller.uid) + " has " + std::to_string(in_flight_of(caller.uid)) +
                                 " requests running or queued; try again later",
                             "max-queued-per-client", limits_.max_queued_per_client, in_flight_of(caller.uid)));
  }
  if (auto st = check_app(request.app); !st) return reject(st.error());
  if (auto st = check_turn_overflow(request); !st) return reject(st.error());
  if (request.params.max_tokens > static_cast<std::int32_t>(max_session_tokens_)) {
    return reject(Error(Errc::invalid_argument,
                        "max_tokens must be between 1 and the context size (" + std::to_string(max_session_tokens_) + ")")
                      .with_limit("max_tokens", max_session_tokens_, static_cast<std::uint64_t>(request.params.max_tokens)));
  }
  if (auto st = engine::validate_generate(request.params); !st) return reject(st.error());
  std::size_t text_bytes = request.content.size() + request.prompt.size() + request.chat.json_schema.size() +
                           request.chat.grammar.size();
  for (const auto& m : request.messages) {
    text_bytes += m.content.size();
    for (const auto& c : m.tool_calls) text_bytes += c.name.size() + c.arguments.size();
  }
  for (const auto& t : request.chat.tools) text_bytes += t.name.size() + t.description.size() + t.parameters.size();
  for (const auto& m : request.tool_results) text_bytes += m.content.size() + m.tool_call_id.size();
  if (request.session_tools) {
    for (const auto& t : *request.session_tools) text_bytes += t.name.size() + t.description.size() + t.parameters.size();
  }
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
    if (!request.tool_results.empty() && !request.content.empty()) {
      return reject(Error(Errc::invalid_argument, "a session turn brings a user message or tool results, not both")
                        .with_param("messages"));
    }
    for (const auto& m : request.tool_results) {
      if (m.role != "tool" || !engine::is_valid_utf8(m.content) || !engine::is_valid_utf8(m.tool_call_id)) {
        return reject(Error(Errc::invalid_argument, "tool results are messages of role \"tool\" with UTF-8 text")
                          .with_param("messages"));
      }
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
  const bool queued = storage_.post([this, id, request = std::move(request), window = window_config_]() mutable {
    auto prep = prepare(request, window);
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

Result<Service::Prepared> Service::prepare(const TurnRequest& request, const WindowConfig& window) {
  Prepared p;
  switch (request.kind) {
    case TurnRequest::Kind::completion: {
      auto t = prompt_tokens(tok_, request.prompt);
      if (!t) return t.error();
      p.input = std::move(*t);
      break;
    }
    case TurnRequest::Kind::chat: {
      auto prompt = engine::apply_chat_template(model_, request.messages, /*add_assistant=*/true, request.chat);
      if (!prompt) return prompt.error();
      auto t = tok_.tokenize(prompt->text, /*add_special=*/true, /*parse_special=*/true);
      if (!t) return t.error();
      p.input = std::move(*t);
      p.grammar = std::move(prompt->grammar);
      LLMD_TRY_STATUS(engine::bind_prefill(model_, tok_, p.input, p.grammar));
      p.syntax = std::move(prompt->syntax);
      p.stops = std::move(prompt->stops);
      p.shown_special = engine::preserved_token_ids(tok_, prompt->preserved_tokens);
      // A history that does not fit: under drop_oldest its oldest whole turns go (the request's
      // messages are not stored; the answer says what was left out). A sliding default is for
      // sessions: a stateless request has no KV kept to shift, and drops (asking for sliding is
      // refused before).
      const std::size_t target = fill_target_tokens(max_session_tokens_, window.fill_target_percent);
      if (request.overflow.value_or(window.overflow) != Overflow::error &&
          must_move(0, p.input.size(), max_session_tokens_,
                    answer_room(request.params.max_tokens, max_session_tokens_, target))) {
        const std::size_t full = p.input.size();
        // Rendered with the request's tools and format: they stay in the shortened prompt.
        auto drop = drop_oldest_chat(model_, tok_, request.messages, full, max_session_tokens_, target, request.chat);
        if (!drop) return drop.error();
        p.input = std::move(drop->tokens);
        p.window = drop->report;
        LLMD_TRY_STATUS(engine::bind_prefill(model_, tok_, p.input, p.grammar));
      }
      break;
    }
    case TurnRequest::Kind::session_message: {
      auto session = prepare_session(request, window);
      if (!session) return session.error();
      p = std::move(*session);
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
  if (prep->window.moved && f.callbacks.window) f.callbacks.window(prep->window);

  Job job;
  job.id = id;
  job.session_id = f.session_id;
  job.history = std::move(prep->history);
  job.input = std::move(prep->input);
  job.lineage = prep->lineage;
  job.history_new = prep->history_new;
  job.slide = std::move(prep->slide);
  job.params = request.params;
  job.params.sampling.grammar = std::move(prep->grammar);
  for (auto& s : prep->stops) job.params.stop.push_back(std::move(s));
  job.params.shown_special = std::move(prep->shown_special);
  if (prep->syntax.kind != engine::AnswerSyntax::Kind::text) f.answer.emplace(std::move(prep->syntax));
  job.cancelled = f.cancelled;
  job.client = f.client;
  job.priority = request.priority;
  // Whose KV: a session's owner (an admin's turn on it too), else the caller, whose stateless
  // requests reuse the KV of its own earlier ones (never another uid's).
  if (request.kind == TurnRequest::Kind::session_message) {
    if (auto e = index_.find(f.session_id); e != index_.end()) job.uid = e->second.uid;
  } else {
    job.uid = f.uid;
    job.anonymous = limits_.prefix_cache;
  }
  job.on_text = [this, id](const std::string& text) {
    asio::post(io_, [this, id, text] {
      auto it2 = in_flight_.find(id);
      if (it2 == in_flight_.end()) return;
      InFlight& g = it2->second;
      if (!g.answer) {
        if (g.callbacks.text) g.callbacks.text(text);
        return;
      }
      for (const auto& d : g.answer->push(text)) {
        if (g.callbacks.delta) g.callbacks.delta(d);
      }
    });
  };
  job.on_first_token = [this, id] {
    asio::post(io_, [this, id] {
      auto it2 = in_flight_.find(id);
      if (it2 != in_flight_.end() && it2->second.callbacks.prefilled) it2->second.callbacks.prefilled();
    });
  };
  if (request.params.top_logprobs >= 0) {
    job.on_logprob = [this, id](const engine::TokenLogprob& lp) {
      asio::post(io_, [this, id, lp] {
        auto it2 = in_flight_.find(id);
        if (it2 != in_flight_.end() && it2->second.callbacks.logprob) it2->second.callbacks.logprob(logprob_entry(lp));
      });
    };
  }
  const bool session_turn = request.kind == TurnRequest::Kind::session_message;
  // The messages the turn adds to the transcript before its answer.
  std::vector<kvstore::MessageRecord> added;
  if (request.tool_results.empty()) {
    added.push_back({"user", std::move(request.content)});
  } else {
    for (auto& m : request.tool_results) added.push_back({"tool", std::move(m.content)});
  }
  job.on_done = [this, id, session_turn, session = f.session_id, added = std::move(added),
                 history = prep->stored_tokens, input = job.input, user_end = prep->user_token_end,
                 change = std::move(prep->change), window = prep->window](JobResult r) mutable {
    TurnResult res{r.finish, std::move(r.text), {}, {}, r.usage, r.timings, r.seed, std::move(r.error), window};
    for (const auto& lp : r.logprobs) res.logprobs.push_back(logprob_entry(lp));
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
    const bool queued = storage_.post([this, id, session, added = std::move(added), history, input = std::move(input),
                                       generated = std::move(r.generated), result, user_end,
                                       change = std::move(change)]() mutable {
      TurnResult turn = std::move(*result);
      const std::int64_t now = unix_ms();
      std::vector<kvstore::MessageRecord> msgs = std::move(added);
      for (auto& m : msgs) m.created_ms = now;
      // The last of them ends where the answer begins; where earlier ones (several tool results)
      // end is not known: a window move re-derives it. The assistant's: the sequence's end.
      msgs.back().token_end = user_end;
      msgs.push_back({"assistant", turn.text, now});
      std::vector<engine::Token> new_tokens = std::move(input);
      new_tokens.insert(new_tokens.end(), generated.begin(), generated.end());
      // The window's move (if any) commits with the turn: a turn not saved leaves it as it was.
      auto st = store_.append_turn(session, msgs, new_tokens, history, now, change);
      std::int64_t bytes = 0;
      if (!st) {
        turn.error = st.error().code() == Errc::no_space ? storage_error(st.error(), "the turn was not saved")
                                                        : st.error().with_context("saving the turn");
        turn.finish = engine::FinishReason::error;
      } else {
        // Bytes the store holds now beyond before (a moved window holds fewer tokens).
        const std::size_t tokens_after = (change.tokens ? change.tokens->size() : history) + new_tokens.size();
        std::size_t text = 0;
        for (const auto& m : msgs) text += m.content.size();
        bytes = static_cast<std::int64_t>(text) +
                (static_cast<std::int64_t>(tokens_after) - static_cast<std::int64_t>(history)) *
                    static_cast<std::int64_t>(sizeof(engine::Token));
      }
      asio::post(io_, [this, id, session, bytes, turn = std::move(turn)]() mutable {
        if (auto e = index_.find(session); e != index_.end()) {
          e->second.bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(0, static_cast<std::int64_t>(e->second.bytes) + bytes));
        }
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

LogprobEntry Service::logprob_entry(const engine::TokenLogprob& lp) const {
  LogprobEntry e{lp.token, tok_.piece(lp.token, /*render_special=*/true), lp.logprob, {}};
  for (const auto& [t, l] : lp.top) e.top.push_back({t, tok_.piece(t, /*render_special=*/true), l});
  return e;
}

void Service::finished(RequestId id, TurnResult result) {
  auto it = in_flight_.find(id);
  if (it == in_flight_.end()) return;
  InFlight& f = it->second;
  if (f.answer && !result.error) {
    std::vector<AnswerDelta> deltas;
    result.answer = f.answer->finish(result.text, deltas);
    if (f.callbacks.delta) {
      for (const auto& d : deltas) f.callbacks.delta(d);
    }
  } else {
    result.answer.content = result.text;
  }
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
  cancel_embeds_after(grace);
  check_idle();
}

void Service::check_idle() {
  if (!shutting_down_ || !on_idle_ || !in_flight_.empty()) return;
  // Whatever the storage thread still has (a deletion, a creation) completes before stop() returns.
  storage_.stop();
  if (embed_thread_ != nullptr) embed_thread_->stop();
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
