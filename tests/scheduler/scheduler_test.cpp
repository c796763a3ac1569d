// The scheduler by simulation (injected clock, a simulated engine that carries out each plan):
// VTC's fairness bound between a heavy and a light client, lifting, weights, work conservation,
// priorities, quotas, preemption and chunked prefill. FIFO runs beside fair to show the same
// checks fail without it.
#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "tests/scheduler/sim.h"

namespace llmd::scheduler {
namespace {

using testing_sim::Shape;
using testing_sim::Sim;
using testing_sim::with_policy;

// Heavy (long prompts, long answers) and light (short both), both always backlogged.
double max_service_gap(Policy policy, int steps) {
  Sim sim(with_policy(policy), 4, 512);
  sim.client("heavy", {512, 256}, 4);
  sim.client("light", {32, 32}, 4);
  double worst = 0;
  for (int i = 0; i < steps; ++i) {
    sim.step();
    worst = std::max(worst, std::abs(sim.service("heavy") - sim.service("light")));
  }
  return worst;
}

TEST(SchedulerFairness, HeavyAndLightStayWithinTheVtcBound) {
  // VTC: |W_f - W_g| <= 2 * max(w_p * L_input, w_q * M) with L_input = 512 and M = 512 tokens a step.
  const double bound = 2 * std::max(1.0 * 512, 2.0 * 512);
  const double fair = max_service_gap(Policy::fair, 3000);
  EXPECT_LE(fair, bound);
  const double fifo = max_service_gap(Policy::fifo, 3000);
  EXPECT_GT(fifo, bound) << "FIFO should not meet the bound here (else the test proves nothing)";
  RecordProperty("max_gap_fair", static_cast<int>(fair));
  RecordProperty("max_gap_fifo", static_cast<int>(fifo));
}

TEST(SchedulerFairness, LiftingPreventsBankingIdleTime) {
  Sim sim(with_policy(Policy::fair), 2, 256);
  sim.client("early", {64, 64}, 2);
  for (int i = 0; i < 1000; ++i) sim.step();
  const double early_before = sim.service("early");
  sim.client("late", {64, 64}, 2);
  for (int i = 0; i < 200; ++i) sim.step();
  const double early = sim.service("early") - early_before, late = sim.service("late");
  // Without lifting the late client would have ~1000 steps of service to catch up on.
  EXPECT_GT(early / (early + late), 0.35);
  EXPECT_LT(early / (early + late), 0.65);
}

TEST(SchedulerFairness, WeightsTwoToOneGiveTwoToOneService) {
  Sim sim(with_policy(Policy::fair), 4, 256);
  sim.client("gold", {64, 64}, 4, 2.0);
  sim.client("plain", {64, 64}, 4, 1.0);
  for (int i = 0; i < 4000; ++i) sim.step();
  const double ratio = sim.service("gold") / sim.service("plain");
  EXPECT_NEAR(ratio, 2.0, 0.2);
}

TEST(SchedulerWork, NeverIdleWhileBacklogged) {
  for (Policy p : {Policy::fair, Policy::fifo}) {
    Sim sim(with_policy(p), 3, 128);
    sim.client("a", {200, 20}, 5);
    sim.client("b", {10, 100}, 2);
    sim.client("c", {50, 50}, 1);
    for (int i = 0; i < 2000; ++i) {
      ASSERT_TRUE(sim.backlogged());
      const std::size_t free = 3 - sim.running(), waiting = sim.scheduler().pending();
      const auto plan = sim.step();
      EXPECT_FALSE(plan.empty()) << "step " << i;
      EXPECT_EQ(plan.admit.size(), std::min(free, waiting)) << "a slot stayed free while requests waited, step " << i;
    }
  }
}

TEST(SchedulerPriorities, BackgroundWaitsForInteractiveButIsNotStarvedAfter) {
  Sim sim(with_policy(Policy::fair), 2, 256);
  sim.client("chat", {32, 32}, 4);
  sim.client("indexer", {256, 16, Priority::background}, 2);
  for (int i = 0; i < 500; ++i) sim.step();
  EXPECT_GT(sim.finished("chat"), 10u);
  EXPECT_EQ(sim.finished("indexer"), 0u);  // interactive work was always waiting
  sim.stop("chat");
  for (int i = 0; i < 500; ++i) sim.step();
  EXPECT_GT(sim.finished("indexer"), 5u);
}

TEST(SchedulerPriorities, InteractiveWorkPreemptsBackground) {
  Sim sim(with_policy(Policy::fair), 1, 256);
  sim.client("indexer", {64, 1000, Priority::background}, 1);
  for (int i = 0; i < 20; ++i) sim.step();
  sim.client("chat", {16, 16}, 1);
  const auto plan = sim.step();
  ASSERT_EQ(plan.preempt.size(), 1u);
  ASSERT_EQ(plan.admit.size(), 1u);
  for (int i = 0; i < 100; ++i) sim.step();
  EXPECT_GT(sim.finished("chat"), 0u);
}

TEST(SchedulerPreemption, AClientFarAheadGivesWayAndResumes) {
  Options o = with_policy(Policy::fair);
  o.preempt_gap = 500;
  Sim sim(o, 1, 256);
  sim.client("hog", {64, 5000}, 1);
  for (int i = 0; i < 400; ++i) sim.step();  // the hog's counter runs ahead alone
  sim.client("newcomer", {16, 8}, 1);
  // Lifting puts the newcomer at the hog's counter, so it is not far behind yet: no preemption.
  EXPECT_TRUE(sim.step().preempt.empty());
  for (int i = 0; i < 2000; ++i) sim.step();
  EXPECT_GT(sim.preemptions(), 0u);        // once the hog ran ahead by the gap, it gave way
  EXPECT_GT(sim.finished("newcomer"), 5u);  // and the newcomer was served
  EXPECT_GT(sim.service("hog"), 0.0);
  // Every preemption is charged to the client whose request gave way, and the totals agree.
  std::uint64_t charged = 0;
  for (const auto& c : sim.scheduler().clients()) {
    charged += c.preempted;
    if (c.client != "hog") EXPECT_EQ(c.preempted, 0u) << c.client;
  }
  EXPECT_EQ(charged, sim.preemptions());
  EXPECT_EQ(sim.scheduler().preemptions(), sim.preemptions());
  EXPECT_EQ(sim.scheduler().parks(), 0u);
}

// A planned preemption the engine could not carry out (the generation had just finished) is not
// counted; a park for cells is counted apart; both stay in the totals after the client is forgotten.
TEST(SchedulerPreemption, OnlyDisplacementsThatHappenAreCountedAndTheyOutliveTheClient) {
  Scheduler s(with_policy(Policy::fair));
  const auto now = Clock::time_point{};
  ASSERT_TRUE(s.submit({1, "a", Priority::interactive, 10, 0}, now));
  StepInput in;
  in.free_slots = 1;
  ASSERT_EQ(s.schedule_slots(in).admit.size(), 1u);
  s.note_displaced(1, /*preempted=*/false);
  s.note_displaced(99, /*preempted=*/true);  // not running: nothing
  EXPECT_EQ(s.parks(), 1u);
  EXPECT_EQ(s.preemptions(), 0u);
  EXPECT_EQ(s.clients().at(0).parked, 1u);
  s.remove(1);
  s.forget_idle(0);
  EXPECT_TRUE(s.clients().empty());
  EXPECT_EQ(s.parks(), 1u);
}

TEST(SchedulerBatching, LongPromptsAreChunkedAndNeverStallDecoding) {
  Sim sim(with_policy(Policy::fair), 2, 128);
  sim.client("talker", {8, 400}, 1);
  for (int i = 0; i < 5; ++i) sim.step();
  sim.client("reader", {2000, 4}, 1);
  for (int i = 0; i < 40; ++i) {
    const auto plan = sim.step();
    EXPECT_EQ(plan.decode.size() + plan.prefill.size() > 0, true);
    std::uint32_t tokens = static_cast<std::uint32_t>(plan.decode.size());
    for (auto [id, n] : plan.prefill) tokens += n;
    EXPECT_LE(tokens, 128u);
    EXPECT_FALSE(plan.decode.empty()) << "step " << i << ": the talker's decoding waited for a prompt";
  }
}

TEST(SchedulerQuotas, OverALimitIsAClearErrorNamingIt) {
  Options o;
  o.quotas.max_queued = 2;
  o.quotas.max_prompt_tokens = 1000;
  o.quotas.max_running = 1;
  Scheduler s(o);
  const auto now = Clock::time_point{};
  ASSERT_TRUE(s.submit({1, "uid:1000", Priority::interactive, 10, 0}, now));
  ASSERT_TRUE(s.submit({2, "uid:1000", Priority::interactive, 10, 0}, now));
  auto third = s.submit({3, "uid:1000", Priority::interactive, 10, 0}, now);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code(), Errc::resource_exhausted);
  EXPECT_NE(third.error().message().find("max_queued"), std::string::npos);
  auto big = s.submit({4, "uid:1001", Priority::interactive, 1001, 0}, now);
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message().find("max_prompt_tokens"), std::string::npos);
  auto dup = s.submit({1, "uid:1001", Priority::interactive, 1, 0}, now);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code(), Errc::invalid_argument);
  // max_running: two free slots, but the client runs one request at a time.
  const auto plan = s.plan({{}, 2, 100}, now);
  EXPECT_EQ(plan.admit.size(), 1u);
  ASSERT_TRUE(s.submit({5, "uid:1002", Priority::interactive, 10, 0}, now));
  const auto next = s.plan({{{plan.admit[0], 0}}, 1, 100}, now);
  ASSERT_EQ(next.admit.size(), 1u);
  EXPECT_EQ(next.admit[0], 5u);  // another client's request, not the capped one's
}

TEST(SchedulerPolicy, NamesParse) {
  EXPECT_EQ(*policy_from_name("fair"), Policy::fair);
  EXPECT_EQ(*policy_from_name("fifo"), Policy::fifo);
  EXPECT_FALSE(policy_from_name("lottery"));
}

}  // namespace
}  // namespace llmd::scheduler

namespace llmd::scheduler {
namespace {

// The engine's two-phase use: slots first (free slots spread over clients by projected counters),
// then the tokens of the requests actually placed; swap-ins charged when they happen.
TEST(SchedulerPhases, SlotsSpreadOverClientsAndSwapIsChargedWhenDone) {
  Options o;
  o.quotas.max_running = 0;
  Scheduler s(o);
  const auto now = Clock::time_point{};
  for (RequestId id = 1; id <= 4; ++id) ASSERT_TRUE(s.submit({id, "a", Priority::interactive, 100, 0}, now));
  for (RequestId id = 11; id <= 14; ++id) ASSERT_TRUE(s.submit({id, "b", Priority::interactive, 100, 0}, now));
  const SlotPlan slots = s.schedule_slots({{}, 4, 0});
  ASSERT_EQ(slots.admit.size(), 4u);
  int from_a = 0;
  for (RequestId id : slots.admit) from_a += id < 10 ? 1 : 0;
  EXPECT_EQ(from_a, 2) << "four free slots, two equal clients: two each";
  // Nothing charged until tokens are planned.
  for (const auto& c : s.clients()) EXPECT_EQ(c.service, 0);
  s.charge_swap(slots.admit[0], 200);
  const TokenPlan tokens = s.schedule_tokens({{slots.admit[0], 100, true}}, 64);
  ASSERT_EQ(tokens.prefill.size(), 1u);
  EXPECT_EQ(tokens.prefill[0].second, 64u);
  const ClientId who = slots.admit[0] < 10 ? "a" : "b";
  for (const auto& c : s.clients()) {
    if (c.client == who) {
      EXPECT_EQ(c.swap_tokens, 200u);
      EXPECT_DOUBLE_EQ(c.service, 0.5 * 200 + 64);
    } else {
      EXPECT_EQ(c.service, 0);
    }
  }
  // A request that could not be placed goes back to pending, in its place.
  s.requeue(slots.admit[3], 100, 0);
  EXPECT_EQ(s.pending(), 5u);
}

TEST(SchedulerPhases, IdleClientsAreForgottenBeyondTheCap) {
  Scheduler s(Options{});
  const auto now = Clock::time_point{};
  for (RequestId id = 1; id <= 5; ++id) {
    ASSERT_TRUE(s.submit({id, "c" + std::to_string(id), Priority::interactive, 1, 0}, now));
  }
  s.remove(1);
  s.remove(2);
  s.remove(3);
  s.forget_idle(3);
  auto clients = s.clients();
  ASSERT_EQ(clients.size(), 3u);
  std::set<ClientId> names;
  for (const auto& c : clients) names.insert(c.client);
  EXPECT_EQ(names, (std::set<ClientId>{"c3", "c4", "c5"})) << "the oldest idle ones go; backlogged ones stay";
}

}  // namespace
}  // namespace llmd::scheduler
