// An in-process daemon core for tests: model, context, engine and storage threads, session store
// and Service on an io_context the test drives.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "core/engine_worker.h"
#include "core/service.h"
#include "core/task_thread.h"
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
    core::WorkerOptions options;
    options.keep_resident = keep_resident;
    worker_ = std::make_unique<core::EngineWorker>(*ctx_, tok_, std::move(options));
    storage_ = std::make_unique<core::TaskThread>("test-storage");
    service_ = std::make_unique<core::Service>(io_, model_, tok_, ctx_->max_seq_len(), *worker_, *storage_, *store_,
                                                 core::ServiceLimits{});
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

  core::SessionInfo create(const core::Caller& c, std::optional<std::string> system = std::nullopt) {
    std::optional<Result<core::SessionInfo>> r;
    service_->create_session(c, std::move(system), "test", [&](Result<core::SessionInfo> x) { r = std::move(x); });
    run_until([&] { return r.has_value(); });
    EXPECT_TRUE(*r) << r->error().to_string();
    return r->ok() ? r->value() : core::SessionInfo{};
  }

  struct Outcome {
    std::optional<Error> rejected;
    std::optional<core::TurnResult> done;
    std::string streamed;
    bool accepted = false;
  };

  // Starts a turn; the outcome fills in as the io_context runs.
  std::shared_ptr<Outcome> start(const core::Caller& c, core::TurnRequest req, core::Service::RequestId* id = nullptr) {
    auto o = std::make_shared<Outcome>();
    core::TurnCallbacks cb;
    cb.accepted = [o] { o->accepted = true; };
    cb.text = [o](const std::string& t) { o->streamed += t; };
    cb.done = [o](const core::TurnResult& r) { o->done = r; };
    cb.rejected = [o](const Error& e) { o->rejected = e; };
    auto rid = service_->start_turn(c, std::move(req), std::move(cb));
    if (id) *id = rid;
    return o;
  }

  Outcome turn(const core::Caller& c, core::TurnRequest req) {
    auto o = start(c, std::move(req));
    run_until([&] { return o->rejected || o->done; });
    return *o;
  }

  static core::TurnRequest message(const std::string& session, const std::string& text, int max_tokens = 24) {
    core::TurnRequest r;
    r.kind = core::TurnRequest::Kind::session_message;
    r.session_id = session;
    r.content = text;
    r.params = greedy(max_tokens);
    return r;
  }

  core::Service& service() { return *service_; }
  core::EngineWorker& worker() { return *worker_; }
  boost::asio::io_context& io() { return io_; }

 private:
  const engine::Model& model_;
  engine::Tokenizer tok_;
  std::unique_ptr<engine::Context> ctx_;
  std::unique_ptr<kvstore::SessionStore> store_;
  std::unique_ptr<core::EngineWorker> worker_;
  std::unique_ptr<core::TaskThread> storage_;
  boost::asio::io_context io_;
  std::unique_ptr<core::Service> service_;
};

}  // namespace llmd::test
