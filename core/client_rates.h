// Per-client rates for `llmctl top` (WorkerStats::clients): generated tokens per second and each
// client's share of all weighted service, over a sliding window of at least kWindow that ends
// when the rates are read.
//
// A pure value: no clock (callers pass `now`), no thread, no lock. Its owner records the
// scheduler's cumulative counters whenever they change (record(); EngineWorker does so on the
// engine thread each time it publishes its stats) and reads the rates as often as it likes
// (fill(), const: reading never moves the window). EngineWorker keeps it under its mutex, so
// stats() on any thread only reads it.
//
// Samples are kept at least kSampleGap apart (the newest one always holds the latest counters),
// and only one older than kWindow is kept: a few samples however often counters change. An engine
// that goes idle records nothing more; a second later its clients' rates are 0.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/job.h"
#include "core/worker_stats.h"

namespace llmd::core {

class ClientRates {
 public:
  static constexpr std::chrono::milliseconds kWindow{1000};
  static constexpr std::chrono::milliseconds kSampleGap{250};

  // The clients' cumulative counters (view.output_tokens, view.service) at `now` (not earlier
  // than the last call's).
  void record(Clock::time_point now, const std::vector<ClientStats>& clients);

  // Sets each client's tokens_per_s and share over the window from the newest sample at least
  // kWindow before `now` to `now`, taking `clients`' counters as the latest (what the last
  // record() saw). A client absent from that sample counts from 0. All 0 until a sample is that
  // old (the first second).
  void fill(Clock::time_point now, std::vector<ClientStats>& clients) const;

 private:
  struct Counters {
    std::uint64_t output_tokens = 0;
    double service = 0;
  };
  struct Sample {
    Clock::time_point at;
    std::map<std::string, Counters> clients;
  };
  std::deque<Sample> samples_;  // oldest first
};

}  // namespace llmd::core
