// llama-server started by a benchmark (see llama_server_process.h).
#include "bench/llama_server_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <thread>

#include "tools/http_client/http_client.h"

namespace llmd::bench {

LlamaServerProcess::~LlamaServerProcess() {
  stop();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void LlamaServerProcess::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void LlamaServerProcess::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

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
  pid_ = ::fork();
  if (pid_ < 0) return errno_error(errno, "fork");
  if (pid_ == 0) {
    std::freopen(env.log_path.c_str(), "a", stderr);
    std::freopen(env.log_path.c_str(), "a", stdout);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    _exit(127);
  }
  for (int i = 0; i < 600; ++i) {
    client::HttpClient c(socket_);
    if (auto r = c.request("GET", "/health"); r && r->status == 200) return {};
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Error(Errc::internal, "llama-server exited at start; see " + env.log_path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Error(Errc::internal, "llama-server did not come up; see " + env.log_path);
}

}  // namespace llmd::bench
