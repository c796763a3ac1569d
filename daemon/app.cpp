// The running daemon (see app.h).
#include "daemon/app.h"

#include <pwd.h>

#include <grp.h>
#include <signal.h>

#include <cstdlib>

#include <spdlog/spdlog.h>

#include "engine/backend.h"
#include "daemon/logging.h"
#include "daemon/settings.h"
#include "daemon/state_dir.h"
#include "engine/embedder.h"
#include "engine/ggml_types.h"

namespace llmd::daemon {
namespace {

// What the embeddings context may take beyond the weights (engine::embedding_context_size).
constexpr std::uint64_t kEmbedMemoryBudget = 512ull << 20;

std::optional<std::uint32_t> group_id(const std::string& name) {
  std::vector<char> buf(16384);
  group g{};
  group* out = nullptr;
  if (::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &out) != 0 || out == nullptr) return std::nullopt;
  return out->gr_gid;
}

// LLMD_FAULT_ENGINE_STALL_MS=N, for tests only (tests/e2e/lifecycle_test.cpp): the engine's first
// decode step sleeps N ms, as a hung llama_decode would, so that a test sees the watchdog stop
// pinging. Read once, at start-up; unset, empty or not a positive number: off.
std::chrono::milliseconds engine_stall_fault() {
  const char* v = std::getenv("LLMD_FAULT_ENGINE_STALL_MS");
  const long ms = v != nullptr ? std::strtol(v, nullptr, 10) : 0;
  return std::chrono::milliseconds(ms > 0 ? ms : 0);
}

// Logs request bodies and response text at debug level, for log-content = true only.
class ContentLogger final : public ipc::Responder {
 public:
  ContentLogger(std::shared_ptr<ipc::Responder> inner, std::string tag) : inner_(std::move(inner)), tag_(std::move(tag)) {}
  void reply(unsigned status, std::string body, std::string content_type, std::vector<ipc::Header> headers) override {
    spdlog::debug("{} -> {} {}", tag_, status, body);
    inner_->reply(status, std::move(body), std::move(content_type), std::move(headers));
  }
  void start_events() override { inner_->start_events(); }
  void event(const std::string& data) override {
    spdlog::debug("{} -> event {}", tag_, data);
    inner_->event(data);
  }
  void named_event(const std::string& name, const std::string& data) override {
    spdlog::debug("{} -> event {} {}", tag_, name, data);
    inner_->named_event(name, data);
  }
  void end_events() override { inner_->end_events(); }
  bool closed() const override { return inner_->closed(); }
  void on_close(std::function<void()> cb) override { inner_->on_close(std::move(cb)); }

 private:
  std::shared_ptr<ipc::Responder> inner_;
  std::string tag_;
};

// Says loudly what a salvage of a damaged sessions.db kept, saved and lost.
void log_salvage(const std::string& path, const kvstore::SalvageReport& r) {
  if (r.finished_earlier) spdlog::warn("{}: installed the salvaged database an interrupted start had written", path);
  if (r.problem.empty()) return;
  auto list = [](const std::vector<std::string>& v) {
    std::string out;
    for (std::size_t i = 0; i < v.size() && i < 20; ++i) out += (i ? ", " : "") + v[i];
    if (v.size() > 20) out += ", and " + std::to_string(v.size() - 20) + " more";
    return out;
  };
  spdlog::error("{} is DAMAGED ({}); the damaged files are kept for the administrator as {}", path, r.problem,
                list(r.kept_aside));
  if (r.nothing_readable) {
    spdlog::error("{}: NOTHING could be read from it: llmd starts with no sessions; every session is LOST from "
                  "the running store and remains only in the kept-aside files",
                  path);
    return;
  }
  spdlog::error("{}: salvaged {} sessions and {} messages into a new database", path, r.sessions_salvaged,
                r.messages_salvaged);
  if (!r.sessions_lost.empty() || r.sessions_lost_unnamed > 0) {
    spdlog::error("{}: LOST {} sessions whose record could not be read{}{}; their readable messages remain only in the "
                  "kept-aside files",
                  path, r.sessions_lost.size() + r.sessions_lost_unnamed,
                  r.sessions_lost.empty() ? "" : ": ", list(r.sessions_lost));
  }
  if (r.messages_lost > 0) spdlog::error("{}: LOST {} messages in all", path, r.messages_lost);
  if (!r.sessions_damaged.empty()) {
    spdlog::error("{}: salvaged sessions that lost part of their history: {}", path, list(r.sessions_damaged));
  }
  if (!r.tokens_lost.empty()) {
    spdlog::warn("{}: the token sequences of {} sessions could not be read ({}); their next turn re-derives them "
                 "from their messages",
                 path, r.tokens_lost.size(), list(r.tokens_lost));
  }
}

}  // namespace

App::App(Config config, std::vector<std::string> argv) : config_(std::move(config)), argv_(std::move(argv)) {}

App::~App() {
  // Tear down in dependency order; the threads are already stopped after a normal run().
  dbus_.reset();
  server_.reset();
  api_.reset();
  if (worker_) worker_->request_stop(std::chrono::milliseconds(0));
  if (storage_) storage_->stop();
  if (embed_thread_) embed_thread_->stop();
  if (worker_) worker_->join();
  service_.reset();
}

ipc::HttpLimits App::http_limits() const {
  ipc::HttpLimits l;
  l.max_body_bytes = config_.max_body_bytes;
  l.max_header_bytes = config_.max_header_bytes;
  l.request_timeout = std::chrono::milliseconds(config_.request_timeout_ms);
  l.header_timeout = std::chrono::milliseconds(config_.header_timeout_ms);
  l.write_timeout = std::chrono::milliseconds(config_.write_timeout_ms);
  l.max_connections = config_.max_connections;
  l.max_connections_per_user = config_.max_connections_per_user;
  return l;
}

scheduler::Options App::scheduling_options() const {
  scheduler::Options o;
  o.policy = config_.scheduler;
  o.preempt_gap = config_.preempt_gap;
  o.prefill_chunk = config_.prefill_chunk;
  o.pace = config_.pace;
  // Queue lengths are the Service's to limit (it answers 429 at once); slots per client are the
  // scheduler's (a client over it waits).
  o.quotas.max_queued = 0;
  o.quotas.max_running = config_.max_running_per_client;
  o.quotas.max_prompt_tokens = 0;
  return o;
}

// `weight` entries by scheduler client ("UID" or "UID/APP"); user names resolved now.
std::map<std::string, double> App::scheduling_weights() const {
  std::map<std::string, double> out;
  for (const auto& entry : config_.weights) {
    auto w = parse_weight(entry);
    if (!w) continue;  // validated already
    std::string uid = w->user;
    if (!std::all_of(uid.begin(), uid.end(), [](unsigned char ch) { return std::isdigit(ch); })) {
      struct passwd pw {};
      struct passwd* found = nullptr;
      std::vector<char> buf(16384);
      if (::getpwnam_r(w->user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        spdlog::warn("weight {}: no user '{}'; the entry is ignored", entry, w->user);
        continue;
      }
      uid = std::to_string(found->pw_uid);
    }
    out[w->app.empty() ? uid : uid + "/" + w->app] = w->weight;
  }
  return out;
}

core::ServiceLimits App::service_limits() const {
  core::ServiceLimits l;
  l.prefix_cache = config_.prefix_cache_entries_per_user > 0;
  l.max_sessions_per_user = config_.max_sessions_per_user;
  l.max_stored_bytes_per_user = config_.max_stored_mib_per_user << 20;
  l.max_queued_per_client = config_.max_queued_per_client;
  l.max_running_per_client = config_.max_running_per_client;
  l.max_prompt_tokens = config_.max_prompt_tokens;
  l.max_message_bytes = config_.max_body_bytes;
  l.max_in_flight = config_.max_in_flight;
  l.default_max_tokens = config_.default_max_tokens;
  l.disk_reserve_bytes = config_.disk_reserve_mib << 20;
  return l;
}

core::WindowConfig App::window_config() const {
  return {config_.context_overflow, config_.context_fill_target};
}

Status App::start() {
  spdlog::info("llmd {} starting (llama.cpp {}), model {}", kVersion, engine::llama_version_string(), config_.model);
  notify("STATUS=loading " + config_.model);
  auto model = engine::Model::load({config_.model});
  if (!model) return model.error();
  model_ = std::move(*model);
  const auto& mi = model_->info();
  spdlog::info("model: {} ({}, {} layers, {} parameters, chat template: {})", mi.description, mi.file_type,
               mi.n_layer, mi.n_params, mi.has_chat_template ? "model's own" : "chatml fallback");

  engine::ContextParams cp;
  cp.n_ctx = config_.ctx;
  cp.n_slots = config_.slots;
  cp.n_batch = config_.batch;
  cp.n_ubatch = std::min<std::uint32_t>(config_.batch, 512);
  cp.n_threads = config_.threads;
  cp.flash_attn = config_.flash_attn;
  cp.type_k = cp.type_v = engine::ggml_type_to_name(config_.kv_type);
  cp.observe_attention = config_.restore == Restore::chunks && config_.kv_policy == kvstore::PolicyKind::attention;
  auto ctx = engine::Context::create(*model_, cp);
  if (!ctx) return ctx.error();
  context_ = std::move(*ctx);
  tokenizer_ = std::make_unique<engine::Tokenizer>(*model_);
  spdlog::info("context: {} KV cells shared by {} slots, {} decoded together, sessions up to {} tokens, {} threads",
               context_->n_ctx(), context_->n_slots(), std::min(config_.parallel, config_.slots),
               context_->max_seq_len(), context_->n_threads());

  // Before any database is opened: SQLite gives a new -wal the mode of its database file.
  auto dir = prepare_state_dir(config_.state_dir);
  if (!dir) return dir.error();
  if (dir->created) spdlog::info("created the state directory {} (0750)", config_.state_dir);
  if (!dir->tightened.empty()) {
    std::string first;
    for (std::size_t i = 0; i < dir->tightened.size() && i < 10; ++i) first += (i ? "; " : "") + dir->tightened[i];
    spdlog::warn("state directory: {} paths other users could read were made private ({}{})", dir->tightened.size(),
                 first, dir->tightened.size() > 10 ? "; ..." : "");
  }
  for (const auto& w : dir->warnings) spdlog::warn("state directory: {}", w);
  const std::string sessions_db = config_.state_dir + "/sessions.db";
  kvstore::SalvageReport salvage;
  auto store = kvstore::SessionStore::open_or_salvage(sessions_db, salvage);
  log_salvage(sessions_db, salvage);
  if (!store) return store.error();
  store_ = std::move(*store);

  if (config_.restore == Restore::chunks) {
    kvstore::ChunkStoreOptions co;
    co.dir = config_.state_dir + "/kv";
    co.chunk_tokens = config_.chunk_tokens;
    co.ram_budget = config_.kv_ram_mib << 20;
    co.disk_budget = config_.kv_disk_mib << 20;
    co.disk_zstd = config_.kv_disk_zstd;
    // The KV tier is a cache: it stops short of twice the reserve, so cached KV alone never brings
    // the file system below the reserve that conversations (sessions.db) are refused at.
    co.disk_reserve = 2 * (config_.disk_reserve_mib << 20);
    co.write_back_queue_bytes = config_.kv_write_back_mib << 20;
    co.prefix_entries_per_uid = config_.prefix_cache_entries_per_user;
    co.prefix_bytes_per_uid = config_.prefix_cache_mib_per_user << 20;
    co.policy.kind = config_.kv_policy;
    co.policy.target_ratio = config_.kv_target_ratio;
    auto chunks = kvstore::ChunkStore::open(std::move(co), context_->kv_layout(), mi.fingerprint);
    if (!chunks) return Error(chunks.error().code(), "KV chunk store: " + chunks.error().message());
    chunks_ = std::move(*chunks);
    spdlog::info("kv: restore from chunks of {} tokens, policy {}, RAM budget {} MiB, disk budget {} MiB",
                 config_.chunk_tokens, kvstore::policy_name(config_.kv_policy), config_.kv_ram_mib, config_.kv_disk_mib);
  }
  core::WorkerOptions wo;
  wo.keep_resident = config_.keep_resident;
  wo.max_running = config_.parallel;
  wo.chunks = chunks_.get();
  wo.scheduling = scheduling_options();
  wo.weights = scheduling_weights();
  const auto wd = watchdog_interval();
  if (wd) wo.heartbeat = Watchdog::heartbeat_period(*wd);  // the watchdog pings while the engine beats
  wo.fault_stall_first_step = engine_stall_fault();
  if (wo.fault_stall_first_step.count() > 0) {
    spdlog::warn("fault injection: the engine's first decode step stalls for {} ms (LLMD_FAULT_ENGINE_STALL_MS)",
                 wo.fault_stall_first_step.count());
  }
  worker_ = std::make_unique<core::EngineWorker>(*context_, *tokenizer_, std::move(wo));
  storage_ = std::make_unique<core::TaskThread>("llmd-storage");
  service_ = std::make_unique<core::Service>(io_, *model_, *tokenizer_, context_->max_seq_len(), *worker_, *storage_, *store_,
                                       service_limits());
  service_->set_window_config(window_config());
  service_->set_chunk_store(chunks_.get());
  service_->set_state_dir(config_.state_dir);
  // Embeddings on a thread and a llama_context of their own (made on the first request): the
  // engine thread is never held. Inputs up to the sequence limit, less where the embedder's
  // buffers would pass kEmbedMemoryBudget.
  core::EmbedConfig ec;
  ec.n_ctx = engine::embedding_context_size(mi, context_->max_seq_len(), kEmbedMemoryBudget);
  ec.threads = config_.threads;
  embed_worker_ = std::make_unique<core::EmbedWorker>(*model_, *tokenizer_, ec);
  embed_thread_ = std::make_unique<core::TaskThread>("llmd-embed");
  service_->set_embeddings(embed_thread_.get(), embed_worker_.get());
  const std::string pooling = engine::model_pooling(*model_);
  spdlog::info("embeddings: inputs up to {} tokens, {} (a context of ~{} MiB made on the first request)", ec.n_ctx,
               pooling.empty() ? "mean pooling (the model names none: vectors for rough similarity only)"
                               : pooling + " pooling (the model's own)",
               engine::embedder_bytes(mi, ec.n_ctx) >> 20);
  LLMD_TRY_STATUS(service_->load());
  spdlog::info("sessions: {} stored in {}", service_->status().sessions, config_.state_dir);

  const auto admin_gid = group_id(config_.admin_group);
  if (!admin_gid) spdlog::info("group {} does not exist: only root administers all sessions", config_.admin_group);
  api_ = std::make_unique<ipc::Api>(*service_, *model_, ipc::ApiConfig{kVersion, admin_gid});
  server_ = std::make_unique<ipc::HttpServer>(io_, http_limits(), [this](ipc::HttpRequest&& req, std::shared_ptr<ipc::Responder> r) {
    spdlog::debug("uid={} pid={} {} {}", req.peer.uid, req.peer.pid, req.method_name, req.path);
    if (config_.log_content) {
      const std::string tag = "uid=" + std::to_string(req.peer.uid) + " " + req.method_name + " " + req.path;
      if (!req.body.empty()) spdlog::debug("{} <- {}", tag, req.body);
      r = std::make_shared<ContentLogger>(std::move(r), tag);
    }
    api_->handle(std::move(req), std::move(r));
  });
  api_->set_connection_stats([this] { return server_->connection_stats(); });
  const auto fds = activation_sockets();
  if (!fds.empty()) {
    LLMD_TRY_STATUS(server_->listen_on_fd(fds.front()));
    listening_on_ = "the socket systemd passed (fd " + std::to_string(fds.front()) + ")";
  } else {
    LLMD_TRY_STATUS(prepare_socket_dir(config_.socket));
    LLMD_TRY_STATUS(server_->listen_on_path(config_.socket));
    listening_on_ = config_.socket;
  }
  worker_->start();
  start_dbus(admin_gid);
  if (wd) {
    watchdog_ = std::make_unique<Watchdog>(io_, *wd, [this] { return worker_->last_progress(); });
    watchdog_->start();
    spdlog::info("watchdog: pinging every {} ms while the engine thread makes progress",
                 std::chrono::duration_cast<std::chrono::milliseconds>(*wd).count() / 2);
  }
  return {};
}

// D-Bus is optional at run time: a bus that cannot be reached, or a name llmd may not own, is a
// warning, and the socket keeps serving.
void App::start_dbus(std::optional<std::uint32_t> admin_gid) {
  const auto bus = ipc::resolve_bus(config_.bus, std::getenv("DBUS_SESSION_BUS_ADDRESS"));
  if (!bus) {
    spdlog::info("D-Bus: off (bus = none)");
    return;
  }
  ipc::DbusEvents events;
  events.serving = [](const std::string& what) { spdlog::info("D-Bus: serving {}", what); };
  events.unavailable = [](const std::string& why) {
    spdlog::warn("D-Bus: {}; D-Bus is off until llmd restarts, the socket keeps serving", why);
  };
  dbus_ = std::make_unique<ipc::DbusApi>(io_, *service_, *api_, ipc::DbusConfig{kVersion, admin_gid},
                                         std::move(events));
  if (auto st = dbus_->start(*bus); !st) {
    spdlog::warn("D-Bus: {}; llmd serves the socket only", st.error().message());
    dbus_.reset();
  }
}

int App::run() {
  ::signal(SIGPIPE, SIG_IGN);
  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.add(SIGHUP);
  wait_for_signal();
  if (auto st = start(); !st) {
    spdlog::error("cannot start: {}", st.error().message());
    notify("STATUS=failed: " + st.error().message());
    return 1;
  }
  spdlog::info("ready: serving {} on {}", api_->model_id(), listening_on_);
  notify("READY=1\nSTATUS=serving " + api_->model_id() + " on " + listening_on_);
  // A callback that throws loses its own request, not the daemon.
  while (true) {
    try {
      io_.run();
      break;
    } catch (const std::exception& e) {
      spdlog::error("unexpected exception on the io thread (the daemon keeps serving): {}", e.what());
    }
  }
  spdlog::info("stopped");
  return exit_code_;
}

void App::wait_for_signal() {
  signals_.async_wait([this](boost::system::error_code ec, int signo) {
    if (ec) return;
    on_signal(signo);
    wait_for_signal();
  });
}

void App::on_signal(int signo) {
  if (signo == SIGHUP) return reload();
  if (!server_) {  // a stop signal during start-up: nothing is serving yet
    io_.stop();
    return;
  }
  if (stopping_) {
    spdlog::warn("second stop signal: cancelling everything now");
    service_->begin_shutdown(std::chrono::milliseconds(0), [] {});
    return;
  }
  spdlog::info("{}: stopping (running requests get {} ms)", signo == SIGTERM ? "SIGTERM" : "SIGINT",
               config_.shutdown_timeout_ms);
  begin_stop();
}

void App::begin_stop() {
  stopping_ = true;
  notify("STOPPING=1\nSTATUS=stopping");
  server_->stop_accepting();
  if (dbus_) dbus_->stop_accepting();
  if (watchdog_) watchdog_->stop();
  const auto grace = std::chrono::milliseconds(config_.shutdown_timeout_ms);
  service_->begin_shutdown(grace, [this] {
    // Everything is saved; let the last responses reach their clients, briefly.
    drain_then_stop(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  });
}

void App::drain_then_stop(std::chrono::steady_clock::time_point deadline) {
  const bool drained = server_->responding() == 0 && (!dbus_ || dbus_->flushed());
  if (drained || std::chrono::steady_clock::now() >= deadline) {
    if (dbus_) dbus_->close();  // leaves the bus (releasing the name) before the io_context stops
    io_.stop();
    return;
  }
  drain_timer_ = std::make_unique<boost::asio::steady_timer>(io_, std::chrono::milliseconds(20));
  drain_timer_->async_wait([this, deadline](boost::system::error_code) { drain_then_stop(deadline); });
}

void App::reload() {
  notify("RELOADING=1");
  std::vector<const char*> argv;
  for (const auto& a : argv_) argv.push_back(a.c_str());
  auto parsed = parse_args(static_cast<int>(argv.size()), argv.data());
  if (!parsed) {
    spdlog::error("SIGHUP: the configuration is invalid, keeping the current one: {}", parsed.error().message());
    notify("READY=1");
    return;
  }
  // Keys that need a restart keep their running values (the table says which: settings.h); a
  // change to one is a warning. The result must pass the same checks as a start-up.
  Config next = parsed->config;
  std::vector<std::string_view> restart, applied;
  for (const auto& s : settings()) {
    if (s.same(next, config_)) continue;
    if (s.reload == Reload::restart) {
      restart.push_back(s.key);
      s.copy(next, config_);
    } else {
      applied.push_back(s.key);
    }
  }
  if (auto problem = check_config(next)) {
    spdlog::error("SIGHUP: the configuration is invalid with the running values of the keys that need a restart, "
                  "keeping the current one: {}",
                  problem->to_string());
    notify("READY=1");
    return;
  }
  config_ = next;
  (void)set_log_level(std::string(name_of(config_.log_level)));
  server_->set_limits(http_limits());
  service_->set_limits(service_limits());
  service_->set_window_config(window_config());
  std::string changed;
  for (const auto key : applied) changed += (changed.empty() ? "" : ", ") + std::string(key);
  spdlog::info("SIGHUP: configuration reloaded ({})", changed.empty() ? "no change to apply" : "applied: " + changed);
  for (const auto& what : restart) spdlog::warn("SIGHUP: {} changed; restart llmd to apply it", what);
  notify("READY=1");
}

}  // namespace llmd::daemon
