// Scenario "fair": the daemon's fair scheduler under load, against its FIFO policy and llama-server.
// One bench process plays several scheduler clients through the "app" field (c0..cN -> "UID/cN");
// each client is a thread keeping its requests outstanding (closed loop, streamed, greedy,
// ignore_eos, every prompt different so no server can reuse a cached prefix).
//   1. Fairness: 2 and 4 backlogged clients on 2 slots, 3 requests outstanding each; c0 sends long
//      requests (~400 prompt tokens, 128 generated), the others short ones (~20, 16). For llmd
//      --scheduler fair, llmd --scheduler fifo and llama-server -np 2, the service of each client in
//      a window after a warm-up, counted by the client as tokens arrive: 1 per prompt token (when
//      the first token arrives) + 2 per generated token, set exact from "usage" at the end of each
//      request. Reported: Jain's index (sum x)^2 / (n sum x^2) and the largest difference; for llmd
//      also the daemon's own per-client "service" from /v1/status over the same window.
//   2. Throughput: 8 clients, one request outstanding each (~64 prompt tokens, 64 generated), 8
//      slots: generated tokens/s of all clients, p50/p99 time to first token (client side), llmd
//      (fair) vs llama-server -np 8.
//   3. Interactive beside a flood (issue 17): A keeps 6 requests outstanding (~300 words, 96
//      generated); B is an app with 2 closed-loop threads (~20 words, 32 generated: send, wait for
//      the whole answer, send the next). B alone first, then beside A, for llmd fair, llmd fifo and
//      llama-server, with 2 and 4 generations decoded together (llmd --parallel N with 16 slots,
//      llama-server -np N). Reported: B's service as a fraction of min(B alone, half the total),
//      B's end-to-end p50/p99 beside B alone's, A's and the total weighted tok/s (vs llmd fifo),
//      the work done in engine-seconds per second (a prompt token costs 1/pp256 s, a generated one
//      1/tg32 s, llama-bench's single-stream rates measured in the same run: the weighted total
//      favours prompt-heavy work, so the fair share of a generation-heavy app lowers it even when
//      nothing is wasted), preemptions/s and the engine time each cost (/v1/status park_ms).
//      LLMD_BENCH_FAIR_ONLY_INTERACTIVE=1 runs only this part, LLMD_BENCH_FAIR_INTERACTIVE_SLOTS=N
//      only N; LLMD_BENCH_FAIR_SHOW=1 prints llmd's own view of the clients after each window.
// Same model (smollm2-135m q8_0), threads, context, batch and parallel generations for every
// server (llama-server with its default per-slot KV split; llmd's pool is shared, 16 slots). Requests go through
// the client module's HttpClient for every server.
// LLMD_BENCH_FAIR_WINDOW: seconds measured per run (default 25; throughput uses 4/5 of it);
// LLMD_BENCH_FAIR_WARMUP: seconds of load before the window (default 4). Before each run it waits
// (up to 2 minutes) until other processes use less than LLMD_BENCH_FAIR_QUIET CPUs (default 0.25),
// and it reports what they used during each window ("other").
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_fair_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
