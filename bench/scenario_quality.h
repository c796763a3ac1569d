// Scenario "quality": what the kvstore's tolerance policies (kvstore/policy.h) cost in output
// quality and what they save in bytes, on a real trained model (stories260K).
//
// For every policy {exact, q8_0, q4_0, position and attention at 0.75, 0.5, 0.35} x chunk size
// {16, 32, 64} tokens, over 50 prompts: a 512-token greedy history in slot 0 is cut into chunks, each chunk is
// encoded with the codec the policy chooses and decoded again, and the result is restored into
// slot 1. Both slots are then fed the same 128 further tokens (the exact slot's greedy
// continuation) and their next-token distributions are compared at every step: greedy agreement
// (same argmax) and KL(P_exact || P_policy). Also: encoded bytes per token (vs exact and vs every
// chunk in q8_0) and encode/decode time per token. Method details in scenario_quality.cpp.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_quality_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
