// Scenario "daemon" (see scenario_daemon.h).
#include "bench/scenario_daemon.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/llama_bench.h"
#include "bench/llmd_process.h"
#include "bench/process.h"
#include "tools/http_client/http_client.h"

namespace llmd::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kGen = 128;

struct Streamed {
  double ttft_ms = 0;
  double decode_tps = 0;
  int tokens = 0;
};

// One streamed completion; times are taken by the client as events arrive.
Result<Streamed> stream_once(const std::string& socket, const std::string& prompt, int max_tokens) {
  client::HttpClient c(socket);
  const nlohmann::json body = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
                               {"ignore_eos", true}, {"stream", true}};
  const auto t0 = Clock::now();
  std::optional<Clock::time_point> first, last;
  int tokens = 0;
  auto r = c.request("POST", "/v1/completions", body.dump(), [&](const std::string& data) {
    const auto now = Clock::now();
    if (data == "[DONE]") return true;
    auto ev = nlohmann::json::parse(data, nullptr, false);
    if (!ev.is_object()) return true;
    if (ev.contains("usage")) {
      tokens = ev["usage"].value("completion_tokens", 0);
      return true;
    }
    if (!ev["choices"][0].value("text", "").empty()) {
      if (!first) first = now;
      last = now;
    }
    return true;
  });
  if (!r) return r.error();
  if (r->status != 200 || !first || tokens < 2) return Error(Errc::internal, "bad streamed answer: " + r->body);
  Streamed s;
  s.tokens = tokens;
  s.ttft_ms = std::chrono::duration<double, std::milli>(*first - t0).count();
  const double span = std::chrono::duration<double>(*last - *first).count();
  // Events between the first and the last token carry tokens-1 tokens.
  s.decode_tps = span > 0 ? (tokens - 1) / span : 0;
  return s;
}

}  // namespace

Status run_daemon_scenario(const BenchEnv& env, Report& report) {
  auto model = ensure_model(env, "smollm2-135m", "q8_0");
  if (!model) return model.error();

  std::vector<double> ours_tps, ours_ttft, theirs_tps, theirs_ttft;
  // A 16-token prompt for this vocabulary.
  const std::string prompt16 = "The quick brown fox jumps over the lazy dog while the sun";
  for (int round = 0; round < env.rounds; ++round) {
    for (int side = 0; side < 2; ++side) {
      const bool llmd_now = (side == 0) == (round % 2 == 0);
      std::fprintf(stderr, "llmd-bench: daemon round %d/%d: %s\n", round + 1, env.rounds, llmd_now ? "llmd" : "llama-bench");
      if (llmd_now) {
        LlmdProcess d;
        LLMD_TRY_STATUS(d.start(env, *model, {"--slots", "1", "--ctx", "4096"}));
        if (auto w = stream_once(d.socket(), prompt16, 8); !w) return w.error();  // warm-up
        for (int r = 0; r < env.reps; ++r) {
          auto s = stream_once(d.socket(), "Once upon a time", kGen + 1);
          if (!s) return s.error();
          ours_tps.push_back(s->decode_tps);
        }
        for (int r = 0; r < env.reps; ++r) {
          auto s = stream_once(d.socket(), prompt16, 2);
          if (!s) return s.error();
          ours_ttft.push_back(s->ttft_ms);
        }
      } else {
        auto tg = llama_bench(env, *model, {"-p", "0", "-n", std::to_string(kGen)});
        if (!tg) return tg.error();
        for (double v : bench_samples((*tg)[0])) theirs_tps.push_back(v);
        // pp16: llama.cpp's own time from a 16-token prompt to the logits of the first token.
        auto pp = llama_bench(env, *model, {"-p", "16", "-n", "0"});
        if (!pp) return pp.error();
        for (double tps : bench_samples((*pp)[0])) theirs_ttft.push_back(tps > 0 ? 16.0 / tps * 1000.0 : 0.0);
      }
    }
  }
  report.rows.push_back({"daemon", "decode tok/s (SSE)", summarize(ours_tps), summarize(theirs_tps), true});
  report.rows.push_back({"daemon", "TTFT ms, 16-tok prompt", summarize(ours_ttft), summarize(theirs_ttft), false});
  report.context["daemon"] = {{"model", *model},
                              {"decode", "client-side tokens/s over SSE, 128 tokens, vs llama-bench tg128"},
                              {"ttft", "client-side, idle daemon, vs llama-bench pp16 time (prompt to first logits)"}};
  return {};
}

}  // namespace llmd::bench
