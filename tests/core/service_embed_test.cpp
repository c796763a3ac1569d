// Service::embed (core/service_embed.cpp) with the real model: the embed thread does the work and
// makes its Embedder on first use, the request counts in flight, and the refusals.
#include <future>

#include "core/embed_worker.h"
#include "tests/core/service_harness.h"

namespace llmd::test {
namespace {

const core::Caller kAlice{1000, 1000, 1, false};

class ServiceEmbed : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = load_model(stories_path());
    ASSERT_TRUE(model_);
    tok_ = std::make_unique<engine::Tokenizer>(*model_);
    worker_ = std::make_unique<core::EmbedWorker>(*model_, *tok_, core::EmbedConfig{128, 2});
    thread_ = std::make_unique<core::TaskThread>("test-embed");
    h_ = std::make_unique<ServiceHarness>(*model_, scratch_dir() + "/sessions.db");
    h_->service().set_embeddings(thread_.get(), worker_.get());
  }
  void TearDown() override { h_.reset(); }  // the drain stops the embed thread

  Result<core::EmbedResult> embed(std::vector<core::EmbedInput> inputs, const core::Caller& who = kAlice) {
    std::optional<Result<core::EmbedResult>> r;
    h_->service().embed(who, core::EmbedRequest{std::move(inputs)}, [&](Result<core::EmbedResult> x) { r = std::move(x); });
    h_->run_until([&] { return r.has_value(); });
    return std::move(*r);
  }

  std::unique_ptr<engine::Model> model_;
  std::unique_ptr<engine::Tokenizer> tok_;
  std::unique_ptr<core::EmbedWorker> worker_;
  std::unique_ptr<core::TaskThread> thread_;
  std::unique_ptr<ServiceHarness> h_;
};

TEST_F(ServiceEmbed, MakesItsEmbedderOnFirstUseAndCountsInFlight) {
  EXPECT_FALSE(worker_->created());
  std::size_t most = 0;
  h_->service().set_in_flight_observer([&] { most = std::max(most, h_->service().counts().in_flight); });
  auto r = embed({std::string("Once upon a time"), std::vector<engine::Token>{1, 300, 301}});
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(worker_->created());
  ASSERT_EQ(r->vectors.size(), 2u);
  EXPECT_EQ(r->vectors[0].size(), static_cast<std::size_t>(model_->info().n_embd));
  EXPECT_EQ(r->prompt_tokens, tok_->tokenize("Once upon a time", true, true)->size() + 3);
  EXPECT_EQ(most, 1u);
  EXPECT_EQ(h_->service().counts().in_flight, 0u);
}

TEST_F(ServiceEmbed, RefusesOverTheCallersInFlightLimit) {
  auto limits = h_->service().limits();
  limits.max_running_per_client = 1;
  limits.max_queued_per_client = 0;
  h_->service().set_limits(limits);
  // The embed thread is held, so the first request stays in flight.
  std::promise<void> release;
  ASSERT_TRUE(thread_->post([f = release.get_future().share()] { f.wait(); }));
  std::optional<Result<core::EmbedResult>> first, second;
  h_->service().embed(kAlice, {{std::string("a")}}, [&](Result<core::EmbedResult> x) { first = std::move(x); });
  h_->service().embed(kAlice, {{std::string("b")}}, [&](Result<core::EmbedResult> x) { second = std::move(x); });
  ASSERT_TRUE(second.has_value());
  ASSERT_FALSE(*second);
  EXPECT_EQ(second->error().code(), Errc::resource_exhausted);
  EXPECT_EQ(second->error().param(), "max-queued-per-client");
  // Another uid is not held back by alice's request.
  std::optional<Result<core::EmbedResult>> bob;
  h_->service().embed({1001, 1001, 2, false}, {{std::string("c")}}, [&](Result<core::EmbedResult> x) { bob = std::move(x); });
  release.set_value();
  h_->run_until([&] { return first.has_value() && bob.has_value(); });
  EXPECT_TRUE(*first);
  EXPECT_TRUE(*bob);
}

TEST_F(ServiceEmbed, ACancelledRequestIsNotRun) {
  std::promise<void> release;
  ASSERT_TRUE(thread_->post([f = release.get_future().share()] { f.wait(); }));
  std::optional<Result<core::EmbedResult>> r;
  const auto id = h_->service().embed(kAlice, {{std::string("a")}}, [&](Result<core::EmbedResult> x) { r = std::move(x); });
  h_->service().cancel(id);
  release.set_value();
  h_->run_until([&] { return r.has_value(); });
  ASSERT_FALSE(*r);
  EXPECT_EQ(r->error().code(), Errc::cancelled);
  EXPECT_FALSE(worker_->created());
}

TEST_F(ServiceEmbed, RefusesBadRequestsNamingTheInput) {
  for (auto inputs : {std::vector<core::EmbedInput>{}, std::vector<core::EmbedInput>{std::string()},
                      std::vector<core::EmbedInput>{std::vector<engine::Token>{}},
                      std::vector<core::EmbedInput>{std::vector<engine::Token>(129, 300)},
                      std::vector<core::EmbedInput>(2049, std::string("a"))}) {
    auto r = embed(inputs);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument) << r.error().to_string();
    EXPECT_EQ(r.error().param(), "input") << r.error().to_string();
  }
  auto limits = h_->service().limits();
  limits.max_embed_tokens = 10;
  h_->service().set_limits(limits);
  auto r = embed({std::vector<engine::Token>(6, 300), std::vector<engine::Token>(6, 300)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param(), "input");
  EXPECT_EQ(r.error().detail().limit, 10u);
  EXPECT_EQ(r.error().detail().actual, 12u);
}

TEST_F(ServiceEmbed, IsUnavailableDuringTheDrain) {
  bool idle = false;
  h_->service().begin_shutdown(std::chrono::milliseconds(1000), [&] { idle = true; });
  auto r = embed({std::string("a")});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::unavailable);
  h_->run_until([&] { return idle; });
}

TEST_F(ServiceEmbed, ARequestTheDrainsGraceOutlivesIsUnavailable) {
  std::promise<void> release;
  ASSERT_TRUE(thread_->post([f = release.get_future().share()] { f.wait(); }));
  std::optional<Result<core::EmbedResult>> r;
  h_->service().embed(kAlice, {{std::string("a")}}, [&](Result<core::EmbedResult> x) { r = std::move(x); });
  bool idle = false;
  h_->service().begin_shutdown(std::chrono::milliseconds(0), [&] { idle = true; });  // no grace: stopped now
  release.set_value();
  h_->run_until([&] { return r.has_value() && idle; });
  ASSERT_FALSE(*r);
  EXPECT_EQ(r->error().code(), Errc::unavailable) << r->error().to_string();  // the daemon's reason, not "cancelled"
}

}  // namespace
}  // namespace llmd::test
