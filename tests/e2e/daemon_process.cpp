// Starting and stopping the real llmd in tests (see daemon_process.h).
#include "tests/e2e/daemon_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/test_env.h"

namespace llmd::test {

namespace {
// Tests write to sockets and pipes whose far end may already be gone: that is an error to check,
// not a reason for the test process to die.
[[maybe_unused]] const bool kIgnoreSigpipe = (::signal(SIGPIPE, SIG_IGN), true);
}  // namespace

// LLMD_TEST_LLMD_BIN in the environment runs the suite against another llmd (an older build, to see
// a regression test fail before its fix; an installed one).
std::string llmd_binary() {
  const char* other = std::getenv("LLMD_TEST_LLMD_BIN");
  return other != nullptr && *other != '\0' ? other : LLMD_TEST_LLMD_BIN;
}
std::string llmctl_binary() { return LLMD_TEST_LLMCTL_BIN; }

DaemonProcess::DaemonProcess(std::string dir, DaemonOptions options)
    : dir_(std::move(dir)), options_(std::move(options)) {
  socket_ = dir_ + "/llmd.sock";
  for (std::size_t i = 0; i + 1 < options_.args.size(); ++i) {
    if (options_.args[i] == "--socket") socket_ = options_.args[i + 1];  // a test's own socket path
  }
  state_dir_ = dir_ + "/state";
  log_path_ = dir_ + "/llmd.log";
  notify_path_ = dir_ + "/notify.sock";
  if (options_.model.empty()) options_.model = stories_path();
  // Tests drop to other uids: they must be able to reach the socket.
  std::filesystem::permissions(dir_, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                         std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                         std::filesystem::perms::others_exec);
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) kill9();
  if (notify_fd_ >= 0) ::close(notify_fd_);
}

std::string DaemonProcess::log() const { return read_file(log_path_); }

Status DaemonProcess::start() {
  if (notify_fd_ < 0) {
    notify_fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, notify_path_.c_str(), sizeof addr.sun_path - 1);
    ::unlink(notify_path_.c_str());
    if (::bind(notify_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return errno_error(errno, "binding the notify socket");
    }
  }
  notes_.clear();
  std::vector<std::string> args = {llmd_binary(), "--model", options_.model, "--state-dir", state_dir_};
  // Test defaults, unless the test sets them itself. No D-Bus unless a test brings its own bus
  // (--bus, or a bus line in its --config file): tests never touch the host's buses.
  auto sets = [&](const std::string& flag) {
    const auto it = std::find(options_.args.begin(), options_.args.end(), flag);
    if (it != options_.args.end()) return true;
    const auto config = std::find(options_.args.begin(), options_.args.end(), "--config");
    if (flag != "--bus" || config == options_.args.end() || config + 1 == options_.args.end()) return false;
    std::istringstream lines(read_file(*(config + 1)));
    for (std::string line; std::getline(lines, line);) {
      const auto eq = line.find('=');
      if (eq == std::string::npos) continue;
      std::string key = line.substr(0, eq);
      key.erase(key.find_last_not_of(" \t") + 1);
      key.erase(0, key.find_first_not_of(" \t"));
      if (key == "bus") return true;
    }
    return false;
  };
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--socket", socket_}, {"--threads", "2"}, {"--ctx", "2048"}, {"--config", "/dev/null"}, {"--bus", "none"}}) {
    if (!sets(flag)) {
      args.push_back(flag);
      args.push_back(value);
    }
  }
  args.insert(args.end(), options_.args.begin(), options_.args.end());
  const pid_t pid = ::fork();
  if (pid < 0) return errno_error(errno, "fork");
  if (pid == 0) {
    const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(log, STDERR_FILENO);
    ::dup2(log, STDOUT_FILENO);
    ::setenv("NOTIFY_SOCKET", notify_path_.c_str(), 1);
    for (const auto& e : options_.env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  if (!options_.wait_ready) return {};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& n : notifications(std::chrono::milliseconds(50))) {
      if (n.find("READY=1") != std::string::npos) return {};
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Error(Errc::internal, "llmd exited during start-up (status " + std::to_string(status) + "):\n" + log());
    }
  }
  return Error(Errc::internal, "llmd did not become ready:\n" + log());
}

std::vector<std::string> DaemonProcess::notifications(std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  do {
    pollfd p{notify_fd_, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count()))) <= 0) break;
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(notify_fd_, buf, sizeof buf, 0)) > 0) notes_.emplace_back(buf, static_cast<std::size_t>(n));
  } while (std::chrono::steady_clock::now() < deadline);
  return notes_;
}

int DaemonProcess::stop(int sig, std::chrono::seconds limit) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) != pid_) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      ADD_FAILURE() << "llmd did not stop within " << limit.count() << " s:\n" << log();
      return status;
    }
    notifications(std::chrono::milliseconds(20));
  }
  notifications(std::chrono::milliseconds(20));
  pid_ = -1;
  return status;
}

void DaemonProcess::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

ProgramResult run_program(const std::vector<std::string>& argv, const std::string& input, const std::vector<std::string>& env) {
  ProgramResult r;
  int in[2], out[2], err[2];
  if (::pipe(in) != 0 || ::pipe(out) != 0 || ::pipe(err) != 0) return r;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    _exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < input.size()) {
      const ssize_t n = ::write(in[1], input.data() + off, input.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::close(in[1]);
  });
  auto drain = [](int fd, std::string& to) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) to.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
  };
  std::thread err_reader([&] { drain(err[0], r.err); });
  drain(out[0], r.out);
  err_reader.join();
  writer.join();
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace llmd::test
