// What else the machine is doing while a benchmark runs: CPU time of the whole machine, of this
// process and of the server under test, from /proc. The bench machine may be shared; a scenario
// waits for quiet before it starts a server and reports what other processes used while it measured.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>

namespace llmd::bench {

// A point to measure from: busy ticks of the machine, this process and the server (pid <= 0: none).
struct CpuMark {
  std::int64_t machine = 0, self = 0, server = 0;
  std::chrono::steady_clock::time_point at;
};
CpuMark cpu_mark(pid_t server);

// CPUs' worth of time other processes than this one and `server` used since `since` was taken.
double other_cpus(const CpuMark& since, pid_t server);

// A positive number from the environment variable `name`, else `fallback`.
double env_number(const char* name, double fallback);

// Waits (up to max_seconds) until other processes use less than the CPUs given by the environment
// variable `quiet_env` (default 0.25); `who` names the scenario in the progress lines.
void wait_for_quiet(const char* quiet_env, int max_seconds, const char* who);

}  // namespace llmd::bench
