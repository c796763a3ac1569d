// CPU time of the machine and of processes, from /proc (see cpu_load.h).
#include "bench/cpu_load.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace llmd::bench {
namespace {

// Busy time of the whole machine (all CPUs), in clock ticks.
std::int64_t machine_busy_ticks() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  std::int64_t user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  f >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq >> steal;
  return user + nice + sys + irq + softirq + steal;
}

// CPU time of one process (user + system), in clock ticks.
std::int64_t process_ticks(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  const auto paren = line.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream in(line.substr(paren + 2));  // from field 3 (state) on
  std::string skip;
  for (int field = 3; field < 14; ++field) in >> skip;
  std::int64_t utime = 0, stime = 0;
  in >> utime >> stime;
  return utime + stime;
}

}  // namespace

CpuMark cpu_mark(pid_t server) {
  return {machine_busy_ticks(), process_ticks(::getpid()), server > 0 ? process_ticks(server) : 0,
          std::chrono::steady_clock::now()};
}

double other_cpus(const CpuMark& since, pid_t server) {
  const CpuMark now = cpu_mark(server);
  const double ticks = static_cast<double>((now.machine - since.machine) - (now.self - since.self) -
                                           (now.server - since.server));
  const double s = std::chrono::duration<double>(now.at - since.at).count();
  return s > 0 ? std::max(0.0, ticks / static_cast<double>(::sysconf(_SC_CLK_TCK)) / s) : 0.0;
}

double env_number(const char* name, double fallback) {
  const char* v = std::getenv(name);
  const double s = v ? std::atof(v) : 0.0;
  return s > 0 ? s : fallback;
}

void wait_for_quiet(const char* quiet_env, int max_seconds, const char* who) {
  const double quiet = env_number(quiet_env, 0.25);
  for (int i = 0; i < max_seconds; ++i) {
    const CpuMark m = cpu_mark(-1);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const double busy = other_cpus(m, -1);
    if (busy < quiet) return;
    if (i % 10 == 0) std::fprintf(stderr, "llmd-bench: %s: waiting, other processes use %.1f CPUs\n", who, busy);
  }
}

}  // namespace llmd::bench
