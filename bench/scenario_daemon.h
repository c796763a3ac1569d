// Scenario "daemon": llmd as a client sees it, against llama.cpp's own tools on the same model
// (smollm2-135m q8_0) and threads:
//   - decode tokens/s of one streamed generation, measured by the client from the SSE events
//     (first token to last), vs llama-bench tg128;
//   - time to first token for a 16-token prompt on an idle daemon, measured by the client (socket,
//     HTTP, tokenising, queueing, prefill, sampling, SSE), vs llama-bench's time for the prompt
//     alone (pp16): the ratio is the cost of being a service.
#pragma once

#include "bench/bench_env.h"
#include "bench/report.h"

namespace llmd::bench {

Status run_daemon_scenario(const BenchEnv& env, Report& report);

}  // namespace llmd::bench
