// The llmd daemon started by a benchmark (see llmd_process.h).
#include "bench/llmd_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "tools/http_client/http_client.h"

namespace llmd::bench {

LlmdProcess::~LlmdProcess() {
  stop();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void LlmdProcess::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void LlmdProcess::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

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
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = ::fork();
  if (pid_ < 0) return errno_error(errno, "fork");
  if (pid_ == 0) {
    std::freopen(env.log_path.c_str(), "a", stderr);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(LLMD_BENCH_LLMD_BIN, cargv.data());
    _exit(127);
  }
  for (int i = 0; i < 600; ++i) {
    client::HttpClient c(socket_);
    auto r = c.request("GET", "/v1/health");
    if (r && r->status == 200) return {};
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Error(Errc::internal, "llmd exited at start; see " + env.log_path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Error(Errc::internal, "llmd did not come up; see " + env.log_path);
}

}  // namespace llmd::bench
