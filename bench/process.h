// Running programs from the benchmark: llama.cpp's own tools (fork/exec with stdout captured), and
// servers (llmd, llama-server) started in the background, waited for and stopped.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace llmd::bench {

// Runs argv[0] with the arguments; returns its standard output. Its standard error goes to
// stderr_path (appended). Errors: the program could not start, or exited non-zero.
Result<std::string> run_capture(const std::vector<std::string>& argv, const std::string& stderr_path);

// Starts `path` in the background with `argv` (argv[0]: the name it sees), its stderr (and, with
// `with_stdout`, its stdout) appended to log_path. Errors: fork failed.
Result<pid_t> spawn(const std::string& path, std::vector<std::string> argv, const std::string& log_path,
                    bool with_stdout);
// Polls GET `health_path` on the server's Unix socket until it answers 200 (60 s at most). Errors,
// naming `what` and the log: the process exited (reaped; pid becomes -1), or it never answered.
Status wait_until_healthy(pid_t& pid, const std::string& socket, const std::string& health_path,
                          const std::string& what, const std::string& log_path);
// Sends `sig` to the process (if pid > 0) and reaps it; pid becomes -1.
void end_process(pid_t& pid, int sig);

// One request to a server on its Unix socket, answered in JSON (`body` null: no body). Errors: the
// request failed, a status >= 300 or a body that is not JSON (naming the start of the body).
Result<nlohmann::json> request_json(const std::string& socket, const std::string& method, const std::string& path,
                                    const nlohmann::json& body = nullptr);

}  // namespace llmd::bench
