// Runs llama.cpp's own llama-bench (built from the pinned source) on a model and returns its JSON
// results: the baseline the scenarios compare against, and the fair scenario's cost of a prompt
// and of a generated token on this machine.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_env.h"
#include "common/result.h"

namespace llmd::bench {

// llama-bench -m MODEL -t THREADS -r REPS -fa auto -o json EXTRA...: one object per test.
// Errors: the tool failed, or its output is not a non-empty JSON array.
Result<nlohmann::json> llama_bench(const BenchEnv& env, const std::string& model, const std::vector<std::string>& extra);

// A test's tokens/s, one per repetition.
std::vector<double> bench_samples(const nlohmann::json& test);

}  // namespace llmd::bench
