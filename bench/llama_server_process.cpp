// llama-server started by a benchmark (see llama_server_process.h).
#include "bench/llama_server_process.h"

#include <signal.h>
#include <unistd.h>

#include <cstdint>

#include "bench/process.h"

namespace llmd::bench {

LlamaServerProcess::~LlamaServerProcess() {
  stop();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void LlamaServerProcess::stop() { end_process(pid_, SIGTERM); }

void LlamaServerProcess::kill_hard() { end_process(pid_, SIGKILL); }

Status LlamaServerProcess::start(const BenchEnv& env, const std::string& model, const std::vector<std::string>& args) {
  stop();
  if (dir_.empty()) {
    dir_ = std::filesystem::temp_directory_path() / ("llmd-bench-ls-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(reinterpret_cast<std::uintptr_t>(this)));
  }
  std::filesystem::create_directories(dir_);
  socket_ = (dir_ / "ls.sock").string();
  std::error_code ec;
  std::filesystem::remove(socket_, ec);  // a killed server leaves its socket behind
  const std::string t = std::to_string(env.threads);
  std::vector<std::string> argv = {env.tools_dir + "/llama-server", "-m", model, "-t", t, "-tb", t,
                                   "--host", socket_, "--no-webui"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string path = argv[0];
  auto pid = spawn(path, std::move(argv), env.log_path, /*with_stdout=*/true);
  if (!pid) return pid.error();
  pid_ = *pid;
  return wait_until_healthy(pid_, socket_, "/health", "llama-server", env.log_path);
}

}  // namespace llmd::bench
