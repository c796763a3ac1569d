// Scenario "quality": what the kvstore's tolerance policies (kvstore/policy.h) cost in output
// quality and what they save in bytes, on both real trained models (stories260K, TinyStories-656K).
//
// For every policy {exact, q8_0, q4_0, kivi8, kivi4, kivi2, position and attention at 0.5, 0.45,
// 0.4} x chunk size {16, 64} tokens, over 50 prompts: a greedy history (512 tokens; 384 where the
// model's context is 512) in slot 0 is cut into chunks, each chunk is encoded with the codec the
// policy chooses and decoded again, and the result is restored into slot 1. Both slots are then
// fed the same 128 further tokens (the exact slot's greedy continuation) and their next-token
// distributions are compared at every step: greedy agreement (same argmax), mean and p99
// KL(P_exact || P_policy). Also: encoded bytes per token (vs exact and vs every chunk in q8_0),
// encode/decode time per token, a Pareto table, and llama.cpp's own q8_0/q4_0 KV cache where the
// model's head size allows it. Method details in scenario_quality.cpp.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_quality_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
