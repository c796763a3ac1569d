// Token-level pacing (Options::pace): once every client's requests run, admission decides nothing
// and a client with more or longer requests would get more of every step — its prompt chunks make
// the steps long, and the app beside it waits through them for each token. With pacing a client
// more than `pace` ahead of the lowest counter among the running clients sits steps out.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <set>

#include "scheduler/scheduler.h"
#include "tests/scheduler/sim.h"

namespace llmd::scheduler {
namespace {

using testing_sim::Shape;
using testing_sim::Sim;
using testing_sim::with_policy;

constexpr std::uint32_t kBudget = 512, kQuantum = 4, kChunk = 256;
constexpr double kPace = 128;
const Shape kFlood{400, 96};
const Shape kChat{30, 32, Priority::interactive, 2};

Options paced(std::optional<double> pace, Policy p = Policy::fair) {
  Options o = with_policy(p);
  o.preempt_gap = 0;
  o.prefill_chunk = kChunk;
  o.pace = pace;
  return o;
}

bool has(const std::vector<RequestId>& v, RequestId id) { return std::find(v.begin(), v.end(), id) != v.end(); }
bool prefills(const StepPlan& p, RequestId id) {
  return std::any_of(p.prefill.begin(), p.prefill.end(), [&](const auto& c) { return c.first == id; });
}

TEST(Pace, AClientTooFarAheadSitsTheStepOut) {
  Scheduler s(paced(100));
  ASSERT_TRUE(s.submit({1, "a", Priority::interactive, 1000, 0}, {}));
  ASSERT_TRUE(s.submit({2, "b", Priority::interactive, 10, 0}, {}));
  // Both admitted; a arrived first and its prompt takes the whole budget.
  StepPlan p = s.plan({{}, 2, kBudget}, {});
  ASSERT_EQ(p.admit.size(), 2u);
  ASSERT_TRUE(prefills(p, 1));
  ASSERT_FALSE(prefills(p, 2));
  // a is 512 ahead: b prefills alone, then decodes alone, until it has caught up to within 100.
  p = s.plan({{{1, 488}, {2, 10}}, 0, kBudget}, {});
  EXPECT_TRUE(prefills(p, 2));
  EXPECT_FALSE(prefills(p, 1)) << "a is more than the pace ahead";
  p = s.plan({{{1, 488}, {2, 0}}, 0, kBudget}, {});
  EXPECT_TRUE(has(p.decode, 2));
  EXPECT_FALSE(prefills(p, 1));
  // Without pacing a takes its share of the same step.
  Scheduler off(paced(std::nullopt));
  ASSERT_TRUE(off.submit({1, "a", Priority::interactive, 1000, 0}, {}));
  ASSERT_TRUE(off.submit({2, "b", Priority::interactive, 10, 0}, {}));
  off.plan({{}, 2, kBudget}, {});
  p = off.plan({{{1, 488}, {2, 0}}, 0, kBudget}, {});
  EXPECT_TRUE(has(p.decode, 2));
  EXPECT_TRUE(prefills(p, 1));
}

TEST(Pace, AGenerationAheadIsHeldToo) {
  Scheduler s(paced(10));
  ASSERT_TRUE(s.submit({1, "a", Priority::interactive, 100, 0}, {}));
  ASSERT_TRUE(s.submit({2, "b", Priority::interactive, 1, 0}, {}));
  s.plan({{}, 2, kBudget}, {});  // a: 100 prompt tokens and its first token; b: 1 and its first
  const StepPlan p = s.plan({{{1, 0}, {2, 0}}, 0, kBudget}, {});
  EXPECT_TRUE(has(p.decode, 2));
  EXPECT_FALSE(has(p.decode, 1)) << "a's generation sits the step out";
}

TEST(Pace, BackgroundWorkDoesNotHoldAnInteractiveClient) {
  Scheduler s(paced(10));
  ASSERT_TRUE(s.submit({1, "a", Priority::interactive, 100, 0}, {}));
  ASSERT_TRUE(s.submit({2, "b", Priority::background, 1, 0}, {}));
  s.plan({{}, 2, kBudget}, {});
  const StepPlan p = s.plan({{{1, 0}, {2, 0}}, 0, kBudget}, {});
  EXPECT_TRUE(has(p.decode, 1)) << "the only interactive client is its own floor";
  EXPECT_TRUE(has(p.decode, 2));
}

struct Outcome {
  double chat_p50 = 0, chat_p99 = 0;  // simulated time from a chat request to its answer
  double flood = 0, chat = 0, time = 0;
  double worst_lead = 0;  // the most a client given tokens was ahead of the running floor
};

double pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

Outcome run(const Options& o, std::uint32_t slots, bool flood, int steps = 6000) {
  Sim sim(o, slots, kBudget, kQuantum, /*resident=*/true);
  if (flood) sim.client("flood", kFlood, 6);
  sim.client("chat", kChat, 2);
  Outcome r;
  for (int i = 0; i < steps; ++i) {
    std::map<ClientId, double> counter;
    for (const auto& v : sim.scheduler().clients()) counter[v.client] = v.counter;
    const std::set<ClientId> running = sim.running_clients();
    const StepPlan p = sim.step();
    std::optional<double> floor;
    for (const ClientId& c : running) floor = floor ? std::min(*floor, counter[c]) : counter[c];
    std::set<ClientId> served;
    for (RequestId id : p.decode) served.insert(sim.client_of(id));
    for (const auto& [id, n] : p.prefill) {
      if (!has(p.admit, id)) served.insert(sim.client_of(id));
    }
    for (const ClientId& c : served) {
      if (running.count(c) != 0 && floor) r.worst_lead = std::max(r.worst_lead, counter[c] - *floor);
    }
  }
  r.chat_p50 = pct(sim.time_latencies("chat"), 0.5);
  r.chat_p99 = pct(sim.time_latencies("chat"), 0.99);
  r.flood = sim.service("flood");
  r.chat = sim.service("chat");
  r.time = sim.time();
  return r;
}

void print(const char* what, std::uint32_t slots, const Outcome& r) {
  std::printf("%-10s %u slots: chat p50 %6.1f p99 %6.1f  flood %7.0f chat %7.0f per time %5.1f %5.1f  worst lead %5.0f\n",
              what, slots, r.chat_p50, r.chat_p99, r.flood, r.chat, r.flood / r.time, r.chat / r.time, r.worst_lead);
}

class PaceSim : public testing::TestWithParam<std::uint32_t> {};

// The invariant, with 2 and 4 requests decoded together.
TEST_P(PaceSim, NoClientGetsTokensWhileMoreThanThePaceAhead) {
  const std::uint32_t slots = GetParam();
  const Outcome on = run(paced(kPace), slots, true);
  print("pace 128", slots, on);
  EXPECT_LE(on.worst_lead, kPace);
}

INSTANTIATE_TEST_SUITE_P(Slots, PaceSim, testing::Values(2u, 4u));

// With 4 decoded together the app's 2 requests always run (admission decides nothing): without
// pacing the flood's prompt chunks get it 2.4x the app's service and run it tens of thousands
// of weighted tokens ahead; with pacing the split is even and the app's worst latency is lower.
TEST(PaceSim4, TheFloodDoesNotRunAheadOnceEveryRequestRuns) {
  const Outcome alone = run(paced(kPace), 4, false);
  const Outcome on = run(paced(kPace), 4, true);
  const Outcome off = run(paced(std::nullopt), 4, true);
  print("alone", 4, alone);
  print("pace 128", 4, on);
  print("no pace", 4, off);
  EXPECT_GT(off.worst_lead, 10 * kPace) << "without pacing the flood runs ahead (else the test proves nothing)";
  EXPECT_GT(off.flood, 2 * off.chat);
  EXPECT_LE(on.flood, 1.25 * on.chat);
  EXPECT_GE(on.flood, 0.8 * on.chat) << "the flood still gets its half";
  EXPECT_LT(on.chat_p99, off.chat_p99);
  EXPECT_LE(on.chat_p50, 1.5 * alone.chat_p50);
}

}  // namespace
}  // namespace llmd::scheduler
