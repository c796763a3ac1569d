// The Service's session calls (create, list, get, delete) and KV audits (see service.h).
#include <limits>
#include <map>
#include <mutex>
#include <random>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "core/chat_turns.h"
#include "core/service.h"
#include "core/chat_turns.h"
#include "core/service_internal.h"
#include "common/utf8.h"

namespace llmd::core {
namespace asio = boost::asio;
using namespace detail;

void Service::create_session(const Caller& caller, std::optional<std::string> system_prompt, std::string app,
                             std::function<void(Result<SessionInfo>)> done) {
  create_session(caller, std::move(system_prompt), std::move(app), std::nullopt, std::move(done));
}

void Service::create_session(const Caller& caller, std::optional<std::string> system_prompt, std::string app,
                             std::optional<Overflow> overflow, std::function<void(Result<SessionInfo>)> done) {
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
  if (overflow) rec.overflow = std::string(overflow_name(*overflow));
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
      (*cb)(info_of(rec, window_config_));
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
        SessionInfo i = info_of(r, window_config_);
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
      return SessionDetail{info_of(*rec, WindowConfig{}), std::move(*msgs)};
    }();
    asio::post(io_, [this, id, detail = std::move(detail), cb]() mutable {
      if (detail) {
        auto it = index_.find(id);
        if (it == index_.end()) return (*cb)(no_session(id));
        detail->info.busy = it->second.busy;
        if (detail->info.window.overflow_default) detail->info.window.overflow = window_config_.overflow;
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

Status Service::begin_session_job(const Caller& caller, const std::string& id) {
  if (shutting_down_) return stopping();
  if (!visible(caller, id)) return no_session(id);
  if (in_flight_.size() >= limits_.max_in_flight) {
    return over_limit("too many requests in flight; try again later", "max-in-flight", limits_.max_in_flight,
                      in_flight_.size());
  }
  IndexEntry& e = index_[id];
  if (e.busy) return Error(Errc::busy, "session " + id + " is busy with another request");
  e.busy = true;
  return {};
}

void Service::audit_session(const Caller& caller, const std::string& id,
                            std::function<void(Result<kvstore::AuditReport>)> done) {
  if (auto st = begin_session_job(caller, id); !st) return done(st.error());
  IndexEntry& e = index_[id];
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
    auto rec = store_.get(id);
    if (!rec) return on_io(rec.error());
    if (rec->kv_lineage != 0) {
      // Shifted KV (a sliding window moved) is by design not what a recompute gives.
      return on_io(Error(Errc::unsupported, "session " + id +
                                                "'s KV was shifted by its sliding window: it is not what a "
                                                "recompute of its tokens gives, so it cannot be audited against one"));
    }
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

void Service::prewarm_session(const Caller& caller, const std::string& id,
                              std::function<void(Result<PrewarmResult>)> done) {
  if (auto st = begin_session_job(caller, id); !st) return done(st.error());
  IndexEntry& e = index_[id];
  const RequestId rid = ++next_id_;
  const std::string client = client_of(caller.uid, e.app);
  const std::uint32_t owner = e.uid;
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  in_flight_.emplace(rid, InFlight{cancelled, {}, id, true, caller.uid, client});
  if (in_flight_observer_) in_flight_observer_();
  auto finish = std::make_shared<std::function<void(Result<PrewarmResult>)>>(
      [this, rid, done = std::move(done)](Result<PrewarmResult> r) {
        drop(rid);
        done(std::move(r));
      });
  auto on_io = [this, finish](Result<PrewarmResult> r) {
    asio::post(io_, [finish, r = std::move(r)]() mutable { (*finish)(std::move(r)); });
  };
  const bool queued = storage_.post([this, id, rid, client, owner, cancelled, finish, on_io]() {
    auto rec = store_.get(id);
    if (!rec) return on_io(rec.error());
    auto toks = store_.tokens(id);
    // Tokens another model made, or damaged ones, are re-derived by the next turn: nothing to bring.
    if (!toks || rec->model_id != model_.info().fingerprint ||
        !token_damage(*toks, tok_.n_vocab(), max_stored_tokens(max_session_tokens_)).empty() || toks->empty()) {
      return on_io(PrewarmResult{});
    }
    // A turn that filled the sequence ends with a sampled token that never had KV.
    if (toks->size() > worker_.max_seq_len()) toks->resize(worker_.max_seq_len());
    auto tokens = std::make_shared<std::vector<engine::Token>>(std::move(*toks));
    asio::post(io_, [this, id, rid, client, owner, cancelled, finish, on_io, tokens, lineage = rec->kv_lineage]() {
      // The job decodes the session's last token (the one sampled last and never decoded), so
      // the slot holds every token of it; what it samples after that is discarded.
      Job job;
      job.id = rid;
      job.session_id = id;
      job.history.assign(tokens->begin(), tokens->end() - 1);
      job.input = {tokens->back()};
      job.params.max_tokens = 1;
      job.params.sampling.temperature = 0;
      job.client = client;
      job.uid = owner;
      job.lineage = lineage;
      job.priority = scheduler::Priority::background;
      job.cancelled = cancelled;
      job.on_done = [on_io, n = tokens->size()](JobResult r) {
        if (r.error) return on_io(*r.error);
        if (r.finish == engine::FinishReason::cancelled) {
          return on_io(Error(Errc::cancelled, "the prewarm was cancelled"));
        }
        PrewarmResult p;
        p.tokens = static_cast<std::uint32_t>(n);
        p.loaded = static_cast<std::uint32_t>(r.usage.loaded_tokens);
        p.resident = static_cast<std::uint32_t>(r.usage.cached_tokens - r.usage.loaded_tokens);
        p.restored = static_cast<std::uint32_t>(r.usage.restored_tokens);
        p.timings = r.timings;
        on_io(p);
      };
      if (auto st = worker_.submit(std::move(job)); !st) (*finish)(st.error());
    });
  });
  if (!queued) (*finish)(stopping());
}

}  // namespace llmd::core

namespace llmd::core {
using namespace detail;

// A session turn's tokens (storage thread): the stored window, re-derived after a model change or
// damage, then the window's plan (core/context_window.h).
namespace {

// A lineage no session has had: random, never 0.
std::uint64_t new_lineage() {
  static std::mutex mu;
  static std::mt19937_64 gen{std::random_device{}()};
  std::lock_guard lock(mu);
  std::uint64_t v = 0;
  while (v == 0) v = gen();
  return v;
}

// A session turn's tools: the session's, or those the turn sets; `text` as stored.
struct SessionTools {
  engine::ChatOptions stored;  // the stored tools, as the stored tokens were rendered with them
  engine::ChatOptions chat;    // the turn's: the stored ones, or those it sets (`changed`)
  std::string text;            // the turn's, as stored
  bool changed = false;
};

// Tools as every rendering of a session has them (tool_choice automatic); none where `text` is
// empty or cannot be read.
engine::ChatOptions tools_options(const std::string& session_id, const std::string& text) {
  engine::ChatOptions o;
  if (text.empty()) return o;
  if (auto parsed = engine::tools_from_json(text)) {
    o.tools = std::move(*parsed);
  } else {
    spdlog::warn("session {}: its stored tools cannot be read ({}); its turns go on without them", session_id,
                 parsed.error().message());
  }
  return o;
}

SessionTools session_tools(const kvstore::SessionRecord& rec, const TurnRequest& request) {
  SessionTools t;
  const std::string stored = rec.tools.value_or("");
  t.text = stored;
  if (request.session_tools) t.text = request.session_tools->empty() ? "" : engine::tools_to_json(*request.session_tools);
  t.changed = t.text != stored;
  t.stored = tools_options(rec.id, stored);
  t.chat = t.changed ? tools_options(rec.id, t.text) : t.stored;
  return t;
}

// A session with tools and no system prompt renders an empty one (not stored, seq -1) in every
// rendering, so that its head (where templates describe tools) is the same; `window` gets it or
// loses it to match `has_tools`.
void match_tools_head(std::vector<kvstore::MessageRecord>& window, bool has_tools) {
  const bool has_head = !window.empty() && window.front().seq < 0;
  if (has_tools && !has_head && (window.empty() || window.front().role != "system")) {
    window.insert(window.begin(), kvstore::MessageRecord{"system", ""});
  } else if (!has_tools && has_head) {
    window.erase(window.begin());
  }
}

}  // namespace

Result<Service::Prepared> Service::prepare_session(const TurnRequest& request, const WindowConfig& config) {
  auto rec = store_.get(request.session_id);
  if (!rec) return rec.error();
  auto msgs = store_.messages(request.session_id);
  if (!msgs) return msgs.error();
  if (request.expect_messages && msgs->size() != *request.expect_messages) {
    return Error(Errc::busy, "session " + request.session_id + " holds " + std::to_string(msgs->size()) +
                                 " messages, not the " + std::to_string(*request.expect_messages) +
                                 " this turn was made for (another turn or a rewind ran first); ask again");
  }
  Overflow policy = config.overflow;
  if (rec->overflow) {
    // A stored name this llmd does not know follows the default.
    if (auto p = parse_overflow(*rec->overflow)) policy = *p;
  }
  if (!request.chat.tools.empty()) {
    // Never dropped quietly: a session's tools are its own (TurnRequest::session_tools).
    return Error(Errc::invalid_argument, "a session turn's tools are the session's: they are set as session_tools")
        .with_param("tools");
  }
  auto window = window_messages(*rec, *msgs);
  if (!request.tool_results.empty() && (msgs->empty() || msgs->back().role != "assistant")) {
    return Error(Errc::invalid_argument, "tool results answer the session's last answer's tool calls; session " +
                                             request.session_id + " does not end with an answer")
        .with_param("messages");
  }
  // The session's tools: those stored, or those this turn sets (a change is committed with the turn).
  const SessionTools tools = session_tools(*rec, request);
  match_tools_head(window, !tools.stored.tools.empty());
  auto toks = store_.tokens(request.session_id);
  std::string damage;  // why the stored tokens cannot be used, if they cannot
  if (!toks) {
    if (toks.error().code() != Errc::corrupt) return toks.error();
    damage = toks.error().message();
    toks = std::vector<engine::Token>();
  } else {
    // A turn that filled the context ends with one sampled token beyond it (never decoded). A
    // sequence longer than that whose last message ends where it does is no damage under
    // drop_oldest: a smaller --ctx stranded it, and the window moves as for any overflow.
    const bool stranded = policy != Overflow::error && !window.empty() && window.back().token_end &&
                          *window.back().token_end == toks->size();
    damage = token_damage(*toks, tok_.n_vocab(),
                          stranded ? std::numeric_limits<std::size_t>::max() : max_stored_tokens(max_session_tokens_));
  }
  if (rec->model_id != model_.info().fingerprint || !damage.empty()) {
    // Tokens of another model, or damaged ones: re-derive the window's from its messages, with
    // where each message ends. (A model change or a damaged token sequence invalidates a session's
    // KV and tokens, never the session; its KV chunks no longer match and are not used.)
    // With the stored tools: committed now, as the tools are not (a new set is, with the turn, below).
    auto derived = derive_window(model_, tok_, chat_of(window), tools.stored);
    if (!derived) return derived.error();
    std::map<std::int64_t, std::optional<std::uint32_t>> ends;
    for (std::size_t i = 0; i < window.size() && i < derived->ends.size(); ++i) {
      if (window[i].seq >= 0) ends[window[i].seq] = derived->ends[i];
      window[i].token_end = derived->ends[i];
    }
    LLMD_TRY_STATUS(store_.replace_tokens(request.session_id, derived->tokens, model_.info().fingerprint, ends));
    if (!damage.empty()) {
      spdlog::warn("session {}: its stored tokens are damaged ({}); re-derived {} tokens from its {} messages",
                   request.session_id, damage, derived->tokens.size(), window.size());
    }
    *toks = std::move(derived->tokens);
  }
  // What the store holds now: the turn is planned on it (SessionStore::append_turn checks it).
  const auto planned_on = static_cast<std::uint32_t>(toks->size());
  match_tools_head(window, !tools.chat.tools.empty());
  std::optional<DerivedWindow> retooled;  // the window re-rendered for new tools (committed with the turn)
  if (tools.changed && !toks->empty()) {
    // New tools: the sequence is re-rendered with them, as for a model change, but the new tokens
    // (and the tools) are committed with the turn, so a turn that fails leaves both as they were.
    auto derived = derive_window(model_, tok_, chat_of(window), tools.chat);
    if (!derived) return derived.error();
    for (std::size_t i = 0; i < window.size() && i < derived->ends.size(); ++i) window[i].token_end = derived->ends[i];
    *toks = derived->tokens;
    retooled = std::move(*derived);
  }
  const std::int64_t next_seq = msgs->empty() ? 0 : msgs->back().seq + 1;
  std::vector<engine::ChatMessage> added = request.tool_results;
  if (added.empty()) added.push_back({"user", request.content});
  auto plan = plan_session_turn(model_, tok_, window, rec->window_first_message, next_seq, std::move(*toks), added,
                                max_session_tokens_, policy,
                                fill_target_tokens(max_session_tokens_, config.fill_target_percent),
                                request.params.max_tokens, tools.chat);
  if (!plan) return plan.error();
  if (retooled) {
    // The re-rendered sequence replaces the stored one (unless the window moved: then the plan's
    // does), with every message's new end, and the tools change with it.
    if (!plan->change.tokens) plan->change.tokens = retooled->tokens;
    for (std::size_t i = 0; i < window.size() && i < retooled->ends.size(); ++i) {
      if (window[i].seq >= 0 && !plan->change.token_ends.count(window[i].seq) &&
          (plan->change.first_message.value_or(0) <= window[i].seq || window[i].role == "system")) {
        plan->change.token_ends[window[i].seq] = retooled->ends[i];
      }
    }
  }
  if (tools.changed) plan->change.tools = tools.text;
  if (plan->rederived) {
    spdlog::info("session {}: its messages' token boundaries were unknown; its window was re-derived to move it",
                 request.session_id);
  }
  Prepared p;
  engine::ChatOptions turn_chat = request.chat;  // the session's tools, the turn's choice and format
  turn_chat.tools = tools.chat.tools;
  if (turn_chat.constrained()) {
    // The prompt is the session's (its tools described as every turn renders them); only what the
    // answer must follow and how it is read come from a rendering with the turn's options.
    std::vector<engine::ChatMessage> all = chat_of(window);
    all.insert(all.end(), added.begin(), added.end());
    auto constrained = engine::apply_chat_template(model_, all, /*add_assistant=*/true, turn_chat);
    if (!constrained) return constrained.error();
    p.grammar = std::move(constrained->grammar);
    p.syntax = std::move(constrained->syntax);
    p.stops = std::move(constrained->stops);
    p.shown_special = engine::preserved_token_ids(tok_, constrained->preserved_tokens);
  }
  p.history = std::move(plan->history);
  p.input = std::move(plan->input);
  LLMD_TRY_STATUS(engine::bind_prefill(model_, tok_, p.input, p.grammar));
  p.stored_tokens = planned_on;
  p.user_token_end = plan->user_token_end;
  p.change = std::move(plan->change);
  p.window = plan->report;
  p.lineage = rec->kv_lineage;
  // The last generated token and the last answer's closing: at the history's end, never computed.
  if (!plan->rederived && !retooled && planned_on > 0 && !p.history.empty()) {
    p.history_new = std::min(p.history.size(), plan->closing + 1);
  }
  if (retooled && rec->kv_lineage != 0) {
    // A slid window's KV is not a prefill of the re-rendered sequence: none of it may be reused.
    p.lineage = new_lineage();
    p.change.kv_lineage = p.lineage;
  }
  if (plan->slide) {
    // The KV shifts: it is no longer what a prefill of the window gives. A new lineage, committed
    // with the turn (whether the engine shifted or, lacking the KV, recomputed).
    p.slide = std::move(plan->slide);
    p.slide->from_lineage = rec->kv_lineage;
    p.lineage = new_lineage();
    p.change.kv_lineage = p.lineage;
  }
  return p;
}

}  // namespace llmd::core
