// The llmd daemon started by a benchmark: its own socket and state directory under /tmp, the
// given extra settings, stderr appended to the bench log; SIGTERM and clean-up on destruction.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "bench/bench_env.h"
#include "common/result.h"

namespace llmd::bench {

class LlmdProcess {
 public:
  LlmdProcess() = default;
  ~LlmdProcess();
  LlmdProcess(const LlmdProcess&) = delete;
  LlmdProcess& operator=(const LlmdProcess&) = delete;

  // Starts llmd on the model with `--threads env.threads` and `args`, and waits until it answers.
  // keep_state: reuse the state directory of a previous start (a restart).
  Status start(const BenchEnv& env, const std::string& model, const std::vector<std::string>& args,
               bool keep_state = false);
  void stop();       // SIGTERM, wait
  void kill_hard();  // SIGKILL, wait: a crash; what was not written back is lost
  const std::string& socket() const { return socket_; }
  pid_t pid() const { return pid_; }
  std::filesystem::path state_dir() const { return dir_ / "state"; }

 private:
  std::filesystem::path dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

}  // namespace llmd::bench
