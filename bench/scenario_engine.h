// Scenario "engine": llmd's engine against llama-bench on one sequence, pp512 (prefill) and tg128
// (decode) on the smollm2-135m q8_0 generated model, same threads and context settings.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_engine_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
