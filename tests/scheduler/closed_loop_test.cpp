// The scheduler with clients that think between requests (closed loops), by simulation: the
// pattern of an interactive app beside a flood (issue: an app that waits for each answer must not
// starve behind a client that always has work queued). VTC's lifting puts a returning client level
// with the others, so only preemption at a gap of 0 keeps it from waiting behind a client that is
// ahead of it; the old default gap (4096) and FIFO run beside it to show the checks fail there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "scheduler/scheduler.h"
#include "tests/scheduler/sim.h"

namespace llmd::scheduler {
namespace {

using testing_sim::Shape;
using testing_sim::Sim;
using testing_sim::with_policy;

constexpr std::uint32_t kBudget = 512, kQuantum = 4;  // the engine's batch and kPreemptQuantum
const Shape kFlood{400, 96};                          // ~300 words in, 96 tokens out
const Shape kChat{30, 32, Priority::interactive, 2};  // ~20 words in, 32 out, then a short think
constexpr std::uint32_t kFloodDepth = 6, kChatThreads = 2;
// VTC's bound on the service difference of two backlogged clients: 2 * max(w_p * L_in, w_q * M)
// with L_in the longest prompt and M the most tokens a step carries.
const double kBound = 2 * std::max(1.0 * kFlood.prompt, 2.0 * kBudget);

// The daemon's defaults (prefill-chunk 256, pace 128) with the given preemption gap.
Options gap(std::optional<double> g, Policy p = Policy::fair) {
  Options o = with_policy(p);
  o.preempt_gap = g;
  o.prefill_chunk = 256;
  o.pace = 128;
  return o;
}

struct Outcome {
  double flood = 0, chat = 0;     // service over the run
  std::uint64_t kept_waiting = 0;  // steps the chat client waited behind a client ahead of it
  double worst_window = 0;         // largest service difference over a window both had work waiting
  std::uint64_t idle_windows = 0;  // windows of 200 steps in which the chat client got nothing
  std::uint64_t preemptions = 0;
  double chat_p50 = 0;             // steps from a chat request to its answer
};

double p50(std::vector<std::uint64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[v.size() / 2]);
}

Outcome run(const Options& o, std::uint32_t slots, bool flood, int steps = 6000) {
  Sim sim(o, slots, kBudget, kQuantum, /*resident=*/true);
  if (flood) sim.client("flood", kFlood, kFloodDepth);
  sim.client("chat", kChat, kChatThreads);
  Outcome r;
  bool stretch = false;  // both have work waiting since lo/hi were reset
  double lo = 0, hi = 0;  // the service difference's range over the current stretch
  double window_start = 0;
  for (int i = 0; i < steps; ++i) {
    ClientView f{}, c{};
    for (const auto& v : sim.scheduler().clients()) (v.client == "flood" ? f : c) = v;
    const bool chat_waits = c.queued > 0;
    const bool behind = chat_waits && f.counter > c.counter && sim.preemptible("flood") > 0;
    const StepPlan plan = sim.step();
    if (behind) {
      const bool admitted = std::any_of(plan.admit.begin(), plan.admit.end(),
                                        [&](RequestId id) { return sim.client_of(id) == "chat"; });
      if (!admitted) ++r.kept_waiting;
    }
    // VTC's bound is for clients with work waiting (queued): a client whose every request runs
    // gets all it asks for and may get less than another.
    const bool both = f.queued > 0 && c.queued > 0;
    const double diff = sim.service("flood") - sim.service("chat");
    if (both) {
      lo = stretch ? std::min(lo, diff) : diff;
      hi = stretch ? std::max(hi, diff) : diff;
      stretch = true;
      r.worst_window = std::max(r.worst_window, hi - lo);
    } else {
      stretch = false;
    }
    if ((i + 1) % 200 == 0) {
      if (sim.service("chat") == window_start) ++r.idle_windows;
      window_start = sim.service("chat");
    }
  }
  r.flood = sim.service("flood");
  r.chat = sim.service("chat");
  r.preemptions = sim.preemptions();
  r.chat_p50 = p50(sim.latencies("chat"));
  return r;
}

void print(const char* what, std::uint32_t slots, const Outcome& r) {
  std::printf("%-10s %u slots: flood %8.0f chat %8.0f  kept waiting %5llu  worst window %6.0f  idle windows %3llu  "
              "preemptions %5llu  chat p50 %4.0f steps\n",
              what, slots, r.flood, r.chat, static_cast<unsigned long long>(r.kept_waiting), r.worst_window,
              static_cast<unsigned long long>(r.idle_windows), static_cast<unsigned long long>(r.preemptions),
              r.chat_p50);
}

class ClosedLoop : public testing::TestWithParam<std::uint32_t> {};

TEST_P(ClosedLoop, AThinkingClientIsNeverKeptWaitingBehindAClientAheadOfIt) {
  const std::uint32_t slots = GetParam();
  const Outcome fair = run(gap(0), slots, true);
  print("fair", slots, fair);
  EXPECT_EQ(fair.kept_waiting, 0u);
  EXPECT_EQ(fair.idle_windows, 0u) << "the chat client was served in every window";
  // The old default lets the flood run ahead by 4096 before it gives way: the check fails there.
  const Outcome old = run(gap(4096), slots, true);
  print("gap 4096", slots, old);
  EXPECT_GT(old.kept_waiting, 100u);
}

TEST_P(ClosedLoop, BacklogsStayWithinTheVtcBoundInEveryWindow) {
  const std::uint32_t slots = GetParam();
  const Outcome fair = run(gap(0), slots, true);
  EXPECT_LE(fair.worst_window, kBound);
  const Outcome fifo = run(gap(std::nullopt, Policy::fifo), slots, true);
  print("fifo", slots, fifo);
  EXPECT_GT(fifo.worst_window, kBound) << "FIFO should break the bound here (else the test proves nothing)";
}

TEST_P(ClosedLoop, TheThinkingClientGetsItsDemandOrHalf) {
  const std::uint32_t slots = GetParam();
  const Outcome alone = run(gap(0), slots, false);
  const Outcome fair = run(gap(0), slots, true);
  print("alone", slots, alone);
  const double half = (fair.flood + fair.chat) / 2;
  EXPECT_GE(fair.chat, 0.8 * std::min(alone.chat, half));
  const Outcome fifo = run(gap(std::nullopt, Policy::fifo), slots, true);
  EXPECT_LT(fifo.chat, 0.8 * std::min(alone.chat, half)) << "FIFO should starve it here";
}

INSTANTIATE_TEST_SUITE_P(Slots, ClosedLoop, testing::Values(2u, 4u));

}  // namespace
}  // namespace llmd::scheduler
