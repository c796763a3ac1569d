// fork/exec with captured output (see process.h).
#include "bench/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>

#include "tools/http_client/http_client.h"

namespace llmd::bench {

Result<std::string> run_capture(const std::vector<std::string>& argv, const std::string& stderr_path) {
  if (argv.empty()) return Error(Errc::invalid_argument, "nothing to run");
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return errno_error(errno, "pipe");
  const pid_t pid = ::fork();
  if (pid < 0) return errno_error(errno, "fork");
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    const int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (err >= 0) ::dup2(err, STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(out[1]);
  std::string output;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n > 0) {
      output.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(Errc::internal, argv[0] + " failed (exit " +
                                     std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + "), see " +
                                     stderr_path);
  }
  return output;
}

Result<pid_t> spawn(const std::string& path, std::vector<std::string> argv, const std::string& log_path,
                    bool with_stdout) {
  const pid_t pid = ::fork();
  if (pid < 0) return errno_error(errno, "fork");
  if (pid == 0) {
    std::freopen(log_path.c_str(), "a", stderr);
    if (with_stdout) std::freopen(log_path.c_str(), "a", stdout);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(path.c_str(), cargv.data());
    _exit(127);
  }
  return pid;
}

Status wait_until_healthy(pid_t& pid, const std::string& socket, const std::string& health_path,
                          const std::string& what, const std::string& log_path) {
  for (int i = 0; i < 600; ++i) {
    client::HttpClient c(socket);
    if (auto r = c.request("GET", health_path); r && r->status == 200) return {};
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      return Error(Errc::internal, what + " exited at start; see " + log_path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Error(Errc::internal, what + " did not come up; see " + log_path);
}

void end_process(pid_t& pid, int sig) {
  if (pid <= 0) return;
  ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  pid = -1;
}

Result<nlohmann::json> request_json(const std::string& socket, const std::string& method, const std::string& path,
                                    const nlohmann::json& body) {
  client::HttpClient c(socket);
  auto r = c.request(method, path, body.is_null() ? std::string() : body.dump());
  if (!r) return r.error();
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (r->status >= 300 || j.is_discarded()) {
    return Error(Errc::internal, method + " " + path + " -> " + std::to_string(r->status) + ": " + r->body.substr(0, 300));
  }
  return j;
}

}  // namespace llmd::bench
