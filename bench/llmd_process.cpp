// The llmd daemon started by a benchmark (see llmd_process.h).
#include "bench/llmd_process.h"

#include <signal.h>
#include <cstdlib>
#include <unistd.h>

#include "bench/process.h"

namespace llmd::bench {

LlmdProcess::~LlmdProcess() {
  stop();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void LlmdProcess::stop() { end_process(pid_, SIGTERM); }

void LlmdProcess::kill_hard() { end_process(pid_, SIGKILL); }

Status LlmdProcess::start(const BenchEnv& env, const std::string& model, const std::vector<std::string>& args,
                          bool keep_state) {
  stop();
  if (dir_.empty()) {
    dir_ = std::filesystem::temp_directory_path() / ("llmd-bench-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(reinterpret_cast<std::uintptr_t>(this)));
  }
  if (!keep_state) std::filesystem::remove_all(dir_);
  std::filesystem::create_directories(dir_);
  socket_ = (dir_ / "llmd.sock").string();
  std::vector<std::string> argv = {"llmd", "--config", "/dev/null", "--model", model, "--socket", socket_,
                                   "--state-dir", state_dir().string(), "--threads", std::to_string(env.threads),
                                   "--log-level", "warn"};
  // LLMD_BENCH_LOG_LEVEL: the daemons' log level (e.g. debug, for the restore split), into the log.
  if (const char* level = std::getenv("LLMD_BENCH_LOG_LEVEL")) argv.back() = level;
  argv.insert(argv.end(), args.begin(), args.end());
  auto pid = spawn(LLMD_BENCH_LLMD_BIN, std::move(argv), env.log_path, /*with_stdout=*/false);
  if (!pid) return pid.error();
  pid_ = *pid;
  return wait_until_healthy(pid_, socket_, "/v1/health", "llmd", env.log_path);
}

}  // namespace llmd::bench
