// llama.cpp's own llama-server started by a benchmark: on a Unix socket in its own directory under
// /tmp, stdout and stderr appended to the bench log; SIGTERM and clean-up on destruction.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "bench/bench_env.h"
#include "common/result.h"

namespace llmd::bench {

class LlamaServerProcess {
 public:
  LlamaServerProcess() = default;
  ~LlamaServerProcess();
  LlamaServerProcess(const LlamaServerProcess&) = delete;
  LlamaServerProcess& operator=(const LlamaServerProcess&) = delete;

  // Starts `llama-server -m model -t/-tb env.threads --host SOCKET --no-webui` plus `args`, and
  // waits (up to a minute) until /health answers 200. A running one is stopped first.
  Status start(const BenchEnv& env, const std::string& model, const std::vector<std::string>& args);
  void stop();       // SIGTERM, wait
  void kill_hard();  // SIGKILL, wait: a crash, nothing saved
  const std::string& socket() const { return socket_; }
  pid_t pid() const { return pid_; }

 private:
  std::filesystem::path dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

}  // namespace llmd::bench
