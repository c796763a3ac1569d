// Scenario "grammar": what grammar-constrained decoding costs (issue 16). On each model (the two
// real ones in ../shared/models and the generated smollm2-135m q8_0, whose 49k-token vocabulary is
// a real model's), one llmd serves N greedy chat requests of each variant, interleaved so that any
// drift hits all alike:
//   plain   a chat answer, no constraint;
//   json    response_format json_schema (a small object schema);
//   tools   one tool, tool_choice "required" (the call's grammar);
// and reports llmd's own decode tokens/s (timings.decode_tokens_per_second) per variant, p50 and
// mean, and the ratio of each constrained variant to plain (issue 16's target: >= 0.9x). The same
// variants then run on llama.cpp's llama-server (--jinja, same source, model and threads; its
// timings.predicted_per_second): llmd-json / llama-server-json says whether llmd's constrained
// sampling costs more than llama.cpp's own. Nothing is dropped; no time is asserted.
// Read with care: the tools variant's prompt is longer (the tools are described in it; the table
// shows prompt tokens), and on these tiny models attention over the context is much of a token's
// cost, so its ratio is not the grammar's alone. The json variant has the same prompt as plain.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_grammar_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
