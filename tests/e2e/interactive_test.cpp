// An interactive app beside a flood, end to end (real llmd, real kernel credentials, two uids):
// uid 4311 keeps six long completions outstanding; uid 4312 is a closed loop (two threads, each
// sends a short request, waits for the answer, sends the next). The app must be served in every
// window of the flood's progress, and whenever it has a request waiting, the flood's counter is
// not ahead of its own by more than VTC's bound (lifting puts it level when it comes back; only
// preemption keeps it from waiting behind the flood's long generations). Windows are counted in
// the flood's generated tokens, not in time. FIFO runs beside it and must fail the checks.
#include <algorithm>
#include <cstdio>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

constexpr int kFloodTokens = 96, kFloodDepth = 6, kChatTokens = 16, kChatThreads = 2;
constexpr std::uint64_t kWindow = 2 * kFloodTokens;   // flood tokens per window
constexpr std::uint64_t kStretch = 30 * kFloodTokens;  // flood tokens observed
// 2 * max(w_p * L_in, w_q * M) with the flood's prompt (< 150 tokens) and answer (96 tokens).
constexpr double kBound = 2 * std::max(1.0 * 150, 2.0 * kFloodTokens);

struct Observed {
  std::uint64_t windows = 0, starved_windows = 0;  // windows without a token for the app
  double worst_lead = 0;  // the flood's counter minus the app's, at polls where the app waited
  std::uint64_t chat_tokens = 0, preemptions = 0, flood_preempted = 0, chat_preempted = 0;
};

Observed run(const std::string& policy) {
  DaemonOptions o;
  o.args = {"--parallel", "2", "--scheduler", policy, "--flash-attn", "off"};
  DaemonProcess d(scratch_dir(), o);
  EXPECT_TRUE(d.start()) << d.log();
  std::string long_prompt = "Once upon a time";
  for (int i = 0; i < 12; ++i) long_prompt += " there was a little girl who liked to play";
  const pid_t flood = spawn_completion_loop(d.socket(), 4311, kFloodDepth, [&](int t) {
    return completion(kFloodTokens, long_prompt + " " + std::to_string(t));
  });
  const pid_t chat = spawn_completion_loop(d.socket(), 4312, kChatThreads, [](int t) {
    return completion(kChatTokens, "Tom had a dog " + std::to_string(t));
  });
  Observed ob;
  std::uint64_t window_flood = 0, window_chat = 0, start_flood = 0;
  bool started = false;
  for (int polls = 0; polls < 100000; ++polls) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const auto st = call(d.client(), "GET", "/v1/status").body;
    nlohmann::json f, c;
    for (const auto& cl : st["scheduler"]["clients"]) {
      if (cl["client"] == "4311") f = cl;
      if (cl["client"] == "4312") c = cl;
    }
    if (f.is_null() || c.is_null()) continue;
    const std::uint64_t ft = f["output_tokens"], ct = c["output_tokens"];
    if (!started) {
      // From the app's first token on, with the flood running.
      if (ct == 0 || ft == 0) continue;
      started = true;
      start_flood = window_flood = ft;
      window_chat = ct;
      ob.chat_tokens = ct;
    }
    if (c["queued"].get<int>() > 0) {
      ob.worst_lead = std::max(ob.worst_lead, f["counter"].get<double>() - c["counter"].get<double>());
    }
    if (ft - window_flood >= kWindow) {
      ++ob.windows;
      if (ct == window_chat) ++ob.starved_windows;
      window_flood = ft;
      window_chat = ct;
    }
    if (ft - start_flood >= kStretch) {
      ob.chat_tokens = ct - ob.chat_tokens;
      ob.preemptions = st["scheduler"]["preemptions"];
      ob.flood_preempted = f["preempted"];
      ob.chat_preempted = c["preempted"];
      break;
    }
  }
  std::printf("%s: %llu windows, %llu without a token for the app; flood lead while it waited: %.0f (bound %.0f); "
              "app tokens %llu; preemptions %llu (flood %llu, app %llu)\n",
              policy.c_str(), static_cast<unsigned long long>(ob.windows),
              static_cast<unsigned long long>(ob.starved_windows), ob.worst_lead, kBound,
              static_cast<unsigned long long>(ob.chat_tokens), static_cast<unsigned long long>(ob.preemptions),
              static_cast<unsigned long long>(ob.flood_preempted), static_cast<unsigned long long>(ob.chat_preempted));
  d.stop(SIGTERM);
  EXPECT_EQ(wait_child(flood), 0);
  EXPECT_EQ(wait_child(chat), 0);
  return ob;
}

TEST(InteractiveE2E, AClosedLoopAppIsServedInEveryWindowBesideAFlood) {
  const Observed fair = run("fair");
  EXPECT_GE(fair.windows, 5u);
  EXPECT_EQ(fair.starved_windows, 0u);
  EXPECT_LE(fair.worst_lead, kBound);
  EXPECT_EQ(fair.preemptions, fair.flood_preempted + fair.chat_preempted) << "every preemption charged to a client";
  const Observed fifo = run("fifo");
  EXPECT_TRUE(fifo.starved_windows > 0 || fifo.worst_lead > kBound)
      << "FIFO served the app in every window: the test shows nothing";
}

}  // namespace
}  // namespace llmd::test
