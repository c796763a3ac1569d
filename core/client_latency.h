// Per-client latency for `/v1/status` and `llmctl top` (WorkerStats::clients[].latency): TTFT and
// end-to-end percentiles of each client's requests that finished within the last kWindow — the
// interactive latency a fair scheduler must keep under load, as the client sees it from the
// moment its request reached the engine.
//
// A pure value: no clock (callers pass `now`), no thread, no lock; EngineWorker keeps it under its
// mutex, records each finished job (engine thread) and fills the stats snapshot (any thread).
// Bounded: at most kSamples samples per client and kClients clients (past that, clients with no
// sample in the window go, then the least recently active).
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "core/job.h"
#include "core/worker_stats.h"

namespace llmd::core {

class ClientLatencies {
 public:
  static constexpr std::chrono::seconds kWindow{60};
  static constexpr std::size_t kSamples = 512;
  static constexpr std::size_t kClients = 1024;

  // A request of `client` finished at `now`: its time to first token and end to end, in ms.
  void record(const std::string& client, Clock::time_point now, double ttft_ms, double e2e_ms);
  // Sets each client's `latency` from its samples within the window ending at `now`.
  void fill(Clock::time_point now, std::vector<ClientStats>& clients) const;

 private:
  struct Sample {
    Clock::time_point at;
    double ttft_ms = 0, e2e_ms = 0;
  };
  void prune(Clock::time_point now);
  std::map<std::string, std::deque<Sample>> clients_;  // each oldest first
};

}  // namespace llmd::core
