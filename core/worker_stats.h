// What EngineWorker::stats() says about the engine: queue, slots, counters and per-client
// service. A snapshot: a plain value copied out under the worker's mutex, owned by the caller.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scheduler/scheduler.h"

namespace llmd::core {

struct SlotView {
  std::uint32_t index = 0;
  std::string session_id;  // empty: holds no session
  std::uint32_t cells = 0;  // KV cells in use
  bool busy = false;
};

// Percentiles of one latency, in milliseconds.
struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0;
};
// A client's requests that finished within the last minute (core/client_latency.h).
struct ClientLatency {
  std::uint32_t requests = 0;  // 0: none (the percentiles mean nothing)
  Percentiles ttft_ms;         // reaching the engine -> first token
  Percentiles e2e_ms;          // reaching the engine -> last token
};

struct ClientStats {
  scheduler::ClientView view;  // counters, tokens served, queued/running
  // Over a sliding window of at least a second ending at the stats() call (see client_rates.h).
  double tokens_per_s = 0;     // generated tokens per second
  double share = 0;            // its part of all weighted service, [0, 1]
  ClientLatency latency;       // over the last minute
};

struct WorkerStats {
  std::size_t queued = 0;
  std::size_t running = 0;
  std::uint64_t jobs_done = 0;
  std::uint64_t tokens_generated = 0;
  std::uint64_t preemptions = 0;  // generations preempted for fairness (every client's, charged to it)
  std::uint64_t parks = 0;        // generations that gave way because the KV pool was full (the same)
  double park_ms = 0;             // engine-thread time spent parking them (suspend, KV write-back)
  // Slots whose KV was found not to be what the bookkeeping said (the job failed, the slot was
  // cleared): a bug if ever non-zero.
  std::uint64_t kv_check_failures = 0;
  // Prompt tokens a job took from another running job's KV instead of computing them (the
  // choices of an n > 1 request; a caller's concurrent requests with a common prefix).
  std::uint64_t shared_prefix_tokens = 0;
  std::string policy;  // fair | fifo
  std::vector<SlotView> slots;
  std::vector<ClientStats> clients;
};

}  // namespace llmd::core
