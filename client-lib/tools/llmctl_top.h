// llmctl top: a live view of llmd's scheduler (its clients, slots and KV memory), polled from
// GET /v1/status. Kept apart from llmctl.cpp, which only dispatches to it.
#pragma once

#include <string>
#include <vector>

#include "llmclient/llmclient.hpp"

namespace llmd::llmctl {

// What llmctl's main hands to top: where llmd is, the global --json, and llmctl's own error
// reporters, so that top's errors read and exit like every other command's. Each reporter prints
// its message to stderr and returns the exit code for it.
struct TopContext {
  std::string socket;  // empty: libllmclient's default
  bool json = false;
  int (*usage_error)(const std::string& message);
  int (*report)(const llmc::Error& error);                 // a failed call (not for an interrupt)
  int (*bad_answer)(int status, const std::string& body);  // a 200 that is not the expected JSON
};

// Runs `llmctl top [--interval S] [--iterations N] [--sort share|counter] [--json]` (args: what
// follows "top"). Installs its own SIGINT, SIGTERM and SIGHUP handlers: each ends the view cleanly
// (exit code 0, cursor shown again). Returns llmctl's exit code.
int cmd_top(const TopContext& ctx, const std::vector<std::string>& args);

}  // namespace llmd::llmctl
