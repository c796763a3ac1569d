// Scenario "continuation": the KV policies as a user meets them, through the daemon. On both real
// models (stories260K, TinyStories-656K), one slot, 16-token chunks, flash attention off: 12
// sessions each get a first turn (a story opening, 160 greedy tokens); then each gets a second turn
// (48 greedy tokens), for which its KV comes back from its T1 chunks, since the other sessions
// took the slot. The second answers under each policy are compared with the exact policy's: the
// share of the exact answer that the policy's answer repeats from its start (common prefix, in
// characters), with the session's encoded KV bytes and the share of its history that was loaded
// from chunks rather than recomputed.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_continuation_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
