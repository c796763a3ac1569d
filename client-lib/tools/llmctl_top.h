// llmctl top: a live view of llmd's scheduler (its clients, slots and KV memory), polled from
// GET /v1/status. Kept apart from llmctl.cpp, which only dispatches to it.
#pragma once

#include <string>
#include <vector>

#include "client-lib/http_client.h"
#include "common/result.h"

namespace llmd::llmctl {

// What llmctl's main hands to top: where llmd is, the global --json, and llmctl's own error
// reporters, so that top's errors read and exit like every other command's. Each reporter prints
// its message to stderr and returns the exit code for it.
struct TopContext {
  std::string socket;
  bool json = false;
  int (*usage_error)(const std::string& message);
  int (*transport_error)(const Error& error);           // not called for Errc::cancelled
  int (*api_error)(const client::Response& answer);     // an HTTP error status
  int (*bad_answer)(const client::Response& answer);    // a 200 that is not the expected JSON
};

// Runs `llmctl top [--interval S] [--iterations N] [--sort share|counter] [--json]` (args: what
// follows "top"). Installs its own SIGINT, SIGTERM and SIGHUP handlers: each ends the view cleanly
// (exit code 0, cursor shown again). Returns llmctl's exit code.
int cmd_top(const TopContext& ctx, const std::vector<std::string>& args);

}  // namespace llmd::llmctl
