// Scenario "conversations" (issue 15's bench): many conversations taking turns on few slots, the
// way chat apps use a server, for three servers of the same model:
//   (a) llmd sessions: POST /v1/sessions, then each turn POST /v1/sessions/{id}/messages;
//   (b) llmd with a stateless OpenAI-style client: each turn POSTs the whole history (the user
//       messages and the assistant answers exactly as returned) to /v1/chat/completions;
//   (c) llama-server -np 2 with its defaults (prompt cache on, --cache-ram 8 GiB, cache_prompt not
//       sent) and the same client as (b).
// N conversations (8; --quick: 4) take turns round-robin, one request at a time: round 0 is each
// conversation's first message (~1,000 tokens of words), then R rounds (4; --quick: 2) of short
// turns (8 words in, 8 tokens out; greedy, ignore_eos). Then each server is killed (SIGKILL; llmd
// after its pending write-backs are done) and started again (llmd on the same state directory),
// and R more rounds follow; the first of them is "restart".
// Measured per turn, client side: time to the first content byte of the SSE answer. Reported per
// phase (first turn, steady rounds, restart round, later rounds): p50/p90 TTFT and the mean
// prompt_tokens and cached_tokens the server reported (llama-server: timings.cache_n; llmd also its
// loaded_tokens and restored_tokens, history from KV chunks and recomputed); RAM held per
// conversation (growth of the server's RSS from after a warm-up request to the end of the steady
// rounds, / N) and disk (growth of llmd's state directory, / N; llmd's T1/T2 bytes from /v1/status).
// Ratios against issue 15's targets: (b)/(a) <= 1.05 and (b)/(c) <= 0.85 in steady state,
// (c)/(a) and (c)/(b) >= 10 after the restart.
// Model: generated smollm2-135m q8_0; 2 threads unless --threads is given; llmd --slots 2 --ctx
// 4096 (its default: the longest session), llama-server -c 8192 -np 2 (4096 per slot).
// LLMD_BENCH_CONV_N / LLMD_BENCH_CONV_ROUNDS override N and R; LLMD_BENCH_CONV_ARGS adds llmd
// settings, LLMD_BENCH_CONV_LS_ARGS llama-server options (space-separated). Before each server it
// waits (up to 30 s) for other processes to use less than LLMD_BENCH_CONV_QUIET CPUs (0.25), and
// reports what they used.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_conversations_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
