// Routing and the read-only endpoints (see api.h).
#include "ipc/api.h"

#include <sys/stat.h>

#include <pwd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <vector>

#include "core/client_latency.h"
#include "ipc/api_errors.h"

namespace llmd::ipc {
namespace http = boost::beast::http;

namespace {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    const std::size_t j = path.find('/', i);
    parts.push_back(path.substr(i, j - i));
    i = j == std::string::npos ? path.size() : j;
  }
  return parts;
}

}  // namespace

nlohmann::json usage_json(const core::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"restored_tokens", u.restored_tokens},
          {"loaded_tokens", u.loaded_tokens}};
}

namespace {

nlohmann::json by_codec(const auto& values) {
  nlohmann::json j = nlohmann::json::object();
  for (kvstore::Codec c : kvstore::kAllCodecs) {
    const auto v = values[static_cast<std::size_t>(c)];
    if (v != 0) j[std::string(kvstore::codec_name(c))] = v;
  }
  return j;
}

nlohmann::json tier_json(const kvstore::TierStats& t) {
  return {{"budget_bytes", t.budget},
          {"bytes", t.bytes},
          {"chunks", t.chunks},
          {"shared_refs", t.shared_refs},
          {"bytes_saved", t.bytes_saved},
          {"bytes_by_codec", by_codec(t.bytes_by_codec)},
          {"chunks_by_codec", by_codec(t.chunks_by_codec)}};
}

// The chunk store's totals; its last error names a session, so only admins read it.
nlohmann::json kv_status_json(const kvstore::StoreStats& s, const kvstore::ChunkStoreOptions& o,
                              const core::Caller& caller) {
  const bool show_error = caller.admin && !s.last_error.empty();
  return {{"restore", "chunks"},
          {"chunk_tokens", o.chunk_tokens},
          {"policy", std::string(kvstore::policy_name(o.policy.kind))},
          {"ram", tier_json(s.ram)},
          {"disk", tier_json(s.disk)},
          {"write_backs", s.write_backs},
          {"chunks_encoded", s.chunks_encoded},
          {"pending_write_backs", s.pending},
          {"pending_write_back_bytes", s.pending_bytes},
          {"write_back_queue_bytes", o.write_back_queue_bytes},
          {"write_backs_dropped", s.writebacks_dropped},
          {"write_errors", s.write_errors},
          {"reserve_skips", s.reserve_skips},
          {"index_resets", s.index_resets},
          {"bad_chunks", s.bad_chunks},
          {"prefix_cache",
           {{"entries", s.prefix_entries},
            {"bytes", s.prefix_bytes},
            {"entries_dropped", s.prefix_entries_dropped},
            {"entries_per_user", o.prefix_entries_per_uid},
            {"bytes_per_user", o.prefix_bytes_per_uid}}},
          {"chunks_from_other_keys", s.chunks_from_other_keys},
          {"chunks_shared", s.chunks_shared},
          {"costs_ms_per_token",
           {{"ram", s.costs.ram_ms}, {"disk", s.costs.disk_ms}, {"recompute", s.costs.recompute_ms}}},
          {"last_error", show_error ? nlohmann::json(s.last_error) : nlohmann::json(nullptr)}};
}


// The scheduler's clients: all of them for admins, the caller's own for everyone else.
// A client's latency over the last minute: {"window_s", "requests", "ttft_ms" and "e2e_ms" as
// {"p50", "p90", "p99"}} (null percentiles when no request finished).
nlohmann::json latency_json(const core::ClientLatency& l) {
  auto pct = [&](const core::Percentiles& p) -> nlohmann::json {
    if (l.requests == 0) return nullptr;
    return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}};
  };
  return {{"window_s", core::ClientLatencies::kWindow.count()}, {"requests", l.requests}, {"ttft_ms", pct(l.ttft_ms)}, {"e2e_ms", pct(l.e2e_ms)}};
}

nlohmann::json scheduler_json(const core::WorkerStats& w, const core::Caller& caller) {
  nlohmann::json clients = nlohmann::json::array();
  for (const auto& c : w.clients) {
    const std::string& id = c.view.client;
    const auto slash = id.find('/');
    const std::string uid_text = id.substr(0, slash);
    std::uint32_t uid = 0;
    const bool numeric = !uid_text.empty() && std::all_of(uid_text.begin(), uid_text.end(), [](unsigned char ch) {
      return std::isdigit(ch);
    });
    if (numeric) uid = static_cast<std::uint32_t>(std::stoul(uid_text));
    if (!caller.admin && (!numeric || uid != caller.uid)) continue;
    nlohmann::json j = {{"client", id},
                        {"uid", numeric ? nlohmann::json(uid) : nlohmann::json(nullptr)},
                        {"app", slash == std::string::npos ? nlohmann::json(nullptr) : nlohmann::json(id.substr(slash + 1))},
                        {"weight", c.view.weight},
                        {"counter", c.view.counter},
                        {"queued", c.view.queued},
                        {"running", c.view.running},
                        {"input_tokens", c.view.input_tokens},
                        {"output_tokens", c.view.output_tokens},
                        {"swap_tokens", c.view.swap_tokens},
                        {"service", c.view.service},
                        {"preempted", c.view.preempted},
                        {"parked", c.view.parked},
                        {"tokens_per_s", c.tokens_per_s},
                        {"share", c.share},
                        {"latency", latency_json(c.latency)}};
    if (numeric) {
      struct passwd pw {};
      struct passwd* found = nullptr;
      std::array<char, 4096> buf{};
      if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) j["user"] = found->pw_name;
    }
    clients.push_back(std::move(j));
  }
  return {{"policy", w.policy}, {"preemptions", w.preemptions}, {"parks", w.parks}, {"park_ms", w.park_ms},
          {"clients", clients}};
}

}  // namespace

nlohmann::json timings_json(const core::Timings& t, std::int32_t completion_tokens) {
  const double tps = t.decode > 0.0 && completion_tokens > 1 ? (completion_tokens - 1) * 1000.0 / t.decode : 0.0;
  return {{"queue_ms", t.queue},
          {"restore_ms", t.restore},
          {"restore_read_ms", t.restore_read},
          {"restore_decode_ms", t.restore_decode},
          {"restore_recompute_ms", t.restore_recompute},
          {"prefill_ms", t.prefill},
          {"decode_ms", t.decode},
          {"ttft_ms", t.ttft},
          {"decode_tokens_per_second", tps}};
}

std::string openai_finish_reason(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::eog:
    case engine::FinishReason::stop: return "stop";
    case engine::FinishReason::length:
    case engine::FinishReason::context_full: return "length";
    // Not OpenAI's: a cancelled or failed turn is answered as an error (api_turns.cpp), never with these.
    case engine::FinishReason::cancelled: return "cancelled";
    case engine::FinishReason::error: return "error";
    case engine::FinishReason::none: break;
  }
  return "stop";
}

nlohmann::json session_json(const core::SessionInfo& s) {
  return {{"id", s.id},
          {"object", "session"},
          {"created", s.created_ms / 1000},
          {"updated", s.updated_ms / 1000},
          {"owner_uid", s.uid},
          {"app", s.app},
          {"system_prompt", s.system_prompt ? nlohmann::json(*s.system_prompt) : nlohmann::json(nullptr)},
          {"n_tokens", s.n_tokens},
          {"n_messages", s.n_messages},
          {"busy", s.busy},
          {"resident", s.resident},
          {"kv",
           {{"chunks", s.kv.chunks},
            {"tokens", s.kv.tokens},
            {"ram", {{"chunks", s.kv.ram_chunks}, {"bytes", s.kv.ram_bytes}}},
            {"disk", {{"chunks", s.kv.disk_chunks}, {"bytes", s.kv.disk_bytes}}},
            {"chunks_by_codec", by_codec(s.kv.chunks_by_codec)}}},
          {"window",
           {{"overflow", std::string(core::overflow_name(s.window.overflow))},
            {"overflow_default", s.window.overflow_default},
            {"first_message", s.window.first_message},
            {"dropped_messages", s.window.dropped_messages},
            {"dropped_tokens", s.window.dropped_tokens}}}};
}

nlohmann::json window_json(const core::WindowReport& w) {
  return {{"moved", w.moved},
          {"dropped_tokens", w.dropped_tokens},
          {"dropped_messages", w.dropped_messages},
          {"first_message", w.first_message}};
}

void reply_json(Responder& r, unsigned status, const nlohmann::json& body) {
  r.reply(status, to_wire(body));
}

Api::Api(core::Service& service, const engine::Model& model, ApiConfig config)
    : service_(service), model_(model), config_(std::move(config)) {
  model_id_ = model.info().name.empty() ? std::filesystem::path(model.info().path).filename().string()
                                        : model.info().name;
  struct stat st {};
  model_created_ = ::stat(model.info().path.c_str(), &st) == 0
                       ? static_cast<std::int64_t>(st.st_mtime)
                       : std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

core::Caller Api::caller_of(const PeerCredentials& peer) const {
  return core::caller_from(peer.uid, peer.gid, peer.pid, peer.groups, config_.admin_gid);
}

void Api::handle(HttpRequest&& req, std::shared_ptr<Responder> r) {
  const auto parts = split_path(req.path);
  using V = http::verb;
  std::vector<std::string> allowed;  // methods of a route that matched the path only
  auto route = [&](std::initializer_list<V> methods) {
    for (V m : methods) {
      if (m == req.method) return true;
    }
    for (V m : methods) allowed.push_back(std::string(http::to_string(m)));
    return false;
  };
  if (parts.size() >= 2 && parts[0] == "v1") {
    const std::string& what = parts[1];
    if (parts.size() == 2 && what == "health" && route({V::get})) return health(req, *r);
    if (parts.size() == 2 && what == "status" && route({V::get})) return status(req, *r);
    if (parts.size() == 2 && what == "models" && route({V::get})) return models(req, *r);
    if (parts.size() == 3 && what == "models" && route({V::get})) return model(req, *r, parts[2]);
    if (parts.size() == 2 && what == "completions" && route({V::post})) return completions(req, r);
    if (parts.size() == 2 && what == "embeddings" && route({V::post})) return embeddings(req, r);
    if (parts.size() == 3 && what == "chat" && parts[2] == "completions" && route({V::post})) {
      return chat_completions(req, r);
    }
    if (what == "responses") {
      if (parts.size() == 2 && route({V::post})) return responses(req, r);
      if (parts.size() == 3 && route({V::get})) return get_response(req, r, parts[2]);
    }
    if (what == "sessions") {
      if (parts.size() == 2 && route({V::get, V::post})) {
        return req.method == V::post ? create_session(req, r) : list_sessions(req, r);
      }
      if (parts.size() == 3 && route({V::get, V::delete_})) {
        return req.method == V::get ? get_session(req, r, parts[2]) : delete_session(req, r, parts[2]);
      }
      if (parts.size() == 4 && parts[3] == "messages" && route({V::post})) return post_message(req, r, parts[2]);
      if (parts.size() == 4 && parts[3] == "audit" && route({V::post})) return audit_session(req, r, parts[2]);
      if (parts.size() == 4 && parts[3] == "prewarm" && route({V::post})) return prewarm_session(req, r, parts[2]);
      if (parts.size() == 4 && parts[3] == "fork" && route({V::post})) return fork_session(req, r, parts[2]);
      if (parts.size() == 4 && parts[3] == "rewind" && route({V::post})) return rewind_session(req, r, parts[2]);
    }
  }
  if (!allowed.empty()) {
    std::string allow;
    for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    auto e = http_error(405, req.method_name + " is not allowed on " + req.path + " (allowed: " + allow + ")",
                        "method_not_allowed");
    e.headers.push_back({"Allow", allow});
    return reply_error(*r, e);
  }
  reply_error(*r, http_error(404, "no endpoint " + req.method_name + " " + req.path, "not_found"));
}

void Api::health(const HttpRequest&, Responder& r) {
  if (service_.counts().shutting_down) return reply_json(r, 503, {{"status", "stopping"}});  // cheap: no engine lock
  reply_json(r, 200, {{"status", "ok"}});
}

void Api::models(const HttpRequest&, Responder& r) {
  reply_json(r, 200, {{"object", "list"}, {"data", nlohmann::json::array({model_json()})}});
}

void Api::model(const HttpRequest&, Responder& r, const std::string& id) {
  if (id != model_id_ && id != "default") {
    return reply_error(r, http_error(404, "the model '" + id + "' does not exist (llmd serves '" + model_id_ + "')",
                                     "model_not_found", "model"));
  }
  reply_json(r, 200, model_json());
}

nlohmann::json Api::model_json() const {
  const auto& i = model_.info();
  nlohmann::json m = {{"id", model_id_},
                      {"object", "model"},
                      {"created", model_created_},
                      {"owned_by", "llmd"},
                      {"meta",
                       {{"architecture", i.architecture},
                        {"n_params", i.n_params},
                        {"n_ctx_train", i.n_ctx_train},
                        {"n_vocab", i.n_vocab},
                        {"file_type", i.file_type},
                        {"chat_template", i.chat_template_fallback ? "chatml (fallback)" : "model"},
                        {"tool_calls", i.chat_template_tool_calls ? "template" : "generic"}}}};
  return m;
}

void Api::status(const HttpRequest& req, Responder& r) { reply_json(r, 200, status_json(caller_of(req.peer))); }

nlohmann::json Api::status_json(const core::Caller& caller) const {
  const auto st = service_.status();
  const auto& i = model_.info();
  nlohmann::json slots = nlohmann::json::array();
  for (const auto& s : st.worker.slots) {
    // A non-admin sees its own sessions' slots; of the others only that they exist (their cells
    // and activity would tell when someone else's conversation grows). Counts are in "queue".
    const auto owner = s.session_id.empty() ? std::nullopt : service_.session_owner(s.session_id);
    const bool own = owner && *owner == caller.uid;
    if (!caller.admin && !own) {
      slots.push_back({{"index", s.index}, {"session", nullptr}});
      continue;
    }
    slots.push_back({{"index", s.index},
                     {"busy", s.busy},
                     {"cells", s.cells},
                     {"session", owner ? nlohmann::json(s.session_id) : nlohmann::json(nullptr)}});
  }
  const auto& lim = service_.limits();
  nlohmann::json out = {{"version", config_.version},
          {"status", st.shutting_down ? "stopping" : "ok"},
          {"uptime_s", std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count()},
          {"caller", {{"uid", caller.uid}, {"admin", caller.admin}}},
          {"model",
           {{"id", model_id_},
            {"path", i.path},
            {"architecture", i.architecture},
            {"description", i.description},
            {"n_layer", i.n_layer},
            {"n_ctx_train", i.n_ctx_train},
            {"n_vocab", i.n_vocab},
            {"kv_bytes_per_token", i.kv_bytes_per_token_f16},
            {"chat_template", i.has_chat_template ? "model" : "chatml (fallback)"}}},
          {"context", {{"max_session_tokens", service_.max_session_tokens()}, {"slots", st.worker.slots.size()}, {"parallel", service_.parallel()}}},
          {"slots", slots},
          {"queue", {{"queued", st.worker.queued}, {"running", st.worker.running}, {"in_flight", st.in_flight}}},
          {"sessions", {{"total", st.sessions}}},
          {"counters",
           {{"jobs_done", st.worker.jobs_done},
            {"tokens_generated", st.worker.tokens_generated},
            {"kv_check_failures", st.worker.kv_check_failures},
            {"shared_prefix_tokens", st.worker.shared_prefix_tokens}}},
          {"kv", st.kv ? kv_status_json(*st.kv, service_.chunk_options(), caller)
                       : nlohmann::json({{"restore", "recompute"}})},
          {"scheduler", scheduler_json(st.worker, caller)},
          {"limits",
           {{"max_sessions_per_user", lim.max_sessions_per_user},
            {"max_stored_bytes_per_user", lim.max_stored_bytes_per_user},
            {"max_queued_per_client", lim.max_queued_per_client},
            {"max_running_per_client", lim.max_running_per_client},
            {"max_prompt_tokens", lim.max_prompt_tokens},
            {"max_message_bytes", lim.max_message_bytes},
            {"max_in_flight", lim.max_in_flight},
            {"default_max_tokens", lim.default_max_tokens}}}};
  if (connection_stats_) {
    const ConnectionStats c = connection_stats_();
    out["connections"] = {{"open", c.open},
                          {"users", c.users},
                          {"refused_global", c.refused_global},
                          {"refused_per_user", c.refused_per_user},
                          {"max_connections", c.max_connections},
                          {"max_connections_per_user", c.max_connections_per_user}};
  }
  return out;
}

}  // namespace llmd::ipc
