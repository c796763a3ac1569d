// An in-process daemon core for tests: model, context, engine and storage threads, session store
// and Service on an io_context the test drives.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "daemon/engine_worker.h"
#include "daemon/service.h"
#include "daemon/task_thread.h"
#include "kvstore/session_store.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::test {

class ServiceHarness {
 public:
  ServiceHarness(const engine::Model& model, const std::string& db_path, uint32_t slots = 4, bool keep_resident = true)
      : model_(model), tok_(model) {
    ctx_ = make_context(model, slots, 1024);
    auto store = kvstore::SessionStore::open(db_path);
    EXPECT_TRUE(store) << store.error().to_string();
    store_ = std::move(*store);
    daemon::WorkerOptions options;
    options.keep_resident = keep_resident;
    worker_ = std::make_unique<daemon::EngineWorker>(*ctx_, tok_, std::move(options));
    storage_ = std::make_unique<daemon::TaskThread>("test-storage");
    service_ = std::make_unique<daemon::Service>(io_, model_, tok_, ctx_->max_seq_len(), *worker_, *storage_, *store_,
                                                 daemon::ServiceLimits{});
    EXPECT_TRUE(service_->load());
    worker_->start();
  }
  ~ServiceHarness() {
    bool idle = false;
    service_->begin_shutdown(std::chrono::milliseconds(0), [&] { idle = true; });
    run_until([&] { return idle; });
  }

  // Runs the io_context until pred() holds (fails the test after a generous deadline).
  void run_until(const std::function<bool()>& pred, std::chrono::seconds limit = std::chrono::seconds(120)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "timed out waiting for the service";
        return;
      }
      io_.run_one_for(std::chrono::milliseconds(20));
      io_.restart();
    }
  }

  daemon::SessionInfo create(const daemon::Caller& c, std::optional<std::string> system = std::nullopt) {
    std::optional<Result<daemon::SessionInfo>> r;
    service_->create_session(c, std::move(system), "test", [&](Result<daemon::SessionInfo> x) { r = std::move(x); });
    run_until([&] { return r.has_value(); });
    EXPECT_TRUE(*r) << r->error().to_string();
    return r->ok() ? r->value() : daemon::SessionInfo{};
  }

  struct Outcome {
    std::optional<Error> rejected;
    std::optional<daemon::TurnResult> done;
    std::string streamed;
    bool accepted = false;
  };

  // Starts a turn; the outcome fills in as the io_context runs.
  std::shared_ptr<Outcome> start(const daemon::Caller& c, daemon::TurnRequest req, daemon::Service::RequestId* id = nullptr) {
    auto o = std::make_shared<Outcome>();
    daemon::TurnCallbacks cb;
    cb.accepted = [o] { o->accepted = true; };
    cb.text = [o](const std::string& t) { o->streamed += t; };
    cb.done = [o](const daemon::TurnResult& r) { o->done = r; };
    cb.rejected = [o](const Error& e) { o->rejected = e; };
    auto rid = service_->start_turn(c, std::move(req), std::move(cb));
    if (id) *id = rid;
    return o;
  }

  Outcome turn(const daemon::Caller& c, daemon::TurnRequest req) {
    auto o = start(c, std::move(req));
    run_until([&] { return o->rejected || o->done; });
    return *o;
  }

  static daemon::TurnRequest message(const std::string& session, const std::string& text, int max_tokens = 24) {
    daemon::TurnRequest r;
    r.kind = daemon::TurnRequest::Kind::session_message;
    r.session_id = session;
    r.content = text;
    r.params = greedy(max_tokens);
    return r;
  }

  daemon::Service& service() { return *service_; }
  daemon::EngineWorker& worker() { return *worker_; }
  boost::asio::io_context& io() { return io_; }

 private:
  const engine::Model& model_;
  engine::Tokenizer tok_;
  std::unique_ptr<engine::Context> ctx_;
  std::unique_ptr<kvstore::SessionStore> store_;
  std::unique_ptr<daemon::EngineWorker> worker_;
  std::unique_ptr<daemon::TaskThread> storage_;
  boost::asio::io_context io_;
  std::unique_ptr<daemon::Service> service_;
};

}  // namespace llmd::test
