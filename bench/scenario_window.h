// Scenario "window": what the two overflow policies that keep a conversation going past the
// context (core/context_window.h) cost in output quality, on both real trained models
// (stories260K, TinyStories-656K): drop_oldest (the kept tokens are recomputed) against sliding
// (their KV is shifted, StreamingLLM-style), each measured against the full-context reference.
//
// Per model, over 20 prompts: a 384-token greedy story is teacher-forced token by token through a
// sequence limited to 128 tokens. When it is full, the window moves as llmd moves it: the first 4
// tokens stay (the sink: in llmd, the system prompt), the oldest of the rest leave until it holds
// half (context-fill-target's default). drop_oldest then recomputes the kept tokens; sliding
// removes the left positions and shifts the rest down (engine::Context::seq_drop_range, the same
// call the daemon makes). At every step past the first 128 tokens each policy's next-token
// distribution is compared with the full context's: greedy agreement (same argmax), KL(P_full ||
// P_policy), and the perplexity of the story's own next token. Also: tokens recomputed per move.
// The daemon moves at message boundaries and keeps the system prompt; the story has neither, so
// this measures the KV operation itself, not a chat template.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_window_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
