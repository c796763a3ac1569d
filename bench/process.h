// Running llama.cpp's own tools from the benchmark: fork/exec with stdout captured.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace llmd::bench {

// Runs argv[0] with the arguments; returns its standard output. Its standard error goes to
// stderr_path (appended). Errors: the program could not start, or exited non-zero.
Result<std::string> run_capture(const std::vector<std::string>& argv, const std::string& stderr_path);

}  // namespace llmd::bench
