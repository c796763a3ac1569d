// The running daemon: builds every part from the Config, wires them (the socket's HTTP API and,
// where a bus is reachable, the D-Bus service), runs the io thread, handles signals
// (SIGTERM/SIGINT: graceful stop; SIGHUP: reload what can be reloaded) and tears down.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/result.h"
#include "daemon/config.h"
#include "engine/context.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "core/engine_worker.h"
#include "core/service.h"
#include "daemon/systemd.h"
#include "core/task_thread.h"
#include "ipc/api.h"
#include "ipc/dbus_api.h"
#include "ipc/http_server.h"
#include "kvstore/session_store.h"

namespace llmd::daemon {

class App {
 public:
  // argv is kept: SIGHUP re-reads the configuration with the same command line.
  App(Config config, std::vector<std::string> argv);
  ~App();

  // Runs until a stop signal; the process exit code.
  int run();

 private:
  Status start();
  void start_dbus(std::optional<std::uint32_t> admin_gid);
  void wait_for_signal();
  void on_signal(int signo);
  void reload();
  void begin_stop();
  void drain_then_stop(std::chrono::steady_clock::time_point deadline);
  ipc::HttpLimits http_limits() const;
  core::ServiceLimits service_limits() const;
  core::WindowConfig window_config() const;  // context-overflow, context-fill-target
  scheduler::Options scheduling_options() const;
  std::map<std::string, double> scheduling_weights() const;

  Config config_;
  std::vector<std::string> argv_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_{io_};
  std::unique_ptr<engine::Model> model_;
  std::unique_ptr<engine::Context> context_;
  std::unique_ptr<engine::Tokenizer> tokenizer_;
  std::unique_ptr<kvstore::SessionStore> store_;
  std::unique_ptr<kvstore::ChunkStore> chunks_;  // restore=chunks; outlives the worker
  std::unique_ptr<core::EngineWorker> worker_;
  std::unique_ptr<core::TaskThread> storage_;
  std::unique_ptr<core::EmbedWorker> embed_worker_;  // its Embedder made on the first request
  std::unique_ptr<core::TaskThread> embed_thread_;   // llmd-embed: runs embed_worker_
  std::unique_ptr<core::Service> service_;
  std::unique_ptr<ipc::Api> api_;
  std::unique_ptr<ipc::HttpServer> server_;
  std::unique_ptr<ipc::DbusApi> dbus_;  // null with bus = none, or when the bus cannot be reached
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<boost::asio::steady_timer> drain_timer_;
  std::string listening_on_;
  bool stopping_ = false;
  int exit_code_ = 0;
};

}  // namespace llmd::daemon
