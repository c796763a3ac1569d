// A real third-party client against the real llmd: the official openai npm package (v4 and the latest
// major, pinned in tests/compat/openai/package.json and its lockfile), run by node's test runner over
// llmd's Unix socket. This file only starts llmd and node; the checks are in tests/compat/openai/*.mjs.
//
// install.sh installs the packages into ~/.cache/llmd/npm/<hash> once (network on the first run only)
// and finds node >= 22. Without npm or the registry it fails, saying so: the suite never passes
// without having run. LLMD_COMPAT_FEATURES=0 leaves features.test.mjs and responses.test.mjs out
// (run.mjs reads it).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/daemon_process.h"
#include "tests/support/test_env.h"

namespace llmd::test {
namespace {

const std::string kCompatDir = LLMD_TEST_COMPAT_DIR;  // tests/compat/openai in the source tree

struct Run {
  int exit_code = -1;  // 128 + signal when killed; -1 when it could not start
  bool timed_out = false;
  std::string out, err;
};

// Runs argv (an absolute path first) in its own process group with stdout and stderr in files under
// dir, for at most `limit`. At the end, whatever the group still holds (node --test's children) is
// killed before the leader is reaped, so the group id cannot have been reused; if this test process
// dies, PR_SET_PDEATHSIG takes the leader with it.
Run run_limited(const std::vector<std::string>& argv, const std::string& dir, const std::string& name,
                std::chrono::seconds limit) {
  Run r;
  const std::string out_path = dir + "/" + name + ".out", err_path = dir + "/" + name + ".err";
  const pid_t pid = ::fork();
  if (pid < 0) return r;
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || in < 0) _exit(126);
    ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    _exit(127);
  }
  ::setpgid(pid, pid);  // also here: no race with the child's own call
  const auto deadline = std::chrono::steady_clock::now() + limit;
  siginfo_t info{};
  for (;;) {
    info.si_pid = 0;
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(-pid, SIGKILL);  // leftovers in the group; the leader is a zombie or dying, never reused
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

struct Installed {
  std::string node, modules;
};

// install.sh's NODE= and MODULES= lines; fails the test with npm's story when it could not install.
Installed install(const std::string& dir) {
  const Run r = run_limited({"/bin/bash", kCompatDir + "/install.sh"}, dir, "install", std::chrono::seconds(600));
  Installed got;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("NODE=", 0) == 0) got.node = line.substr(5);
    if (line.rfind("MODULES=", 0) == 0) got.modules = line.substr(8);
  }
  if (r.exit_code != 0 || got.node.empty() || got.modules.empty()) {
    ADD_FAILURE() << "tests/compat/openai/install.sh could not install the pinned openai packages (exit "
                  << r.exit_code << (r.timed_out ? ", timed out" : "") << "): the client tests did not run.\n"
                  << r.err << r.out;
    return {};
  }
  if (!r.err.empty()) std::cout << r.err;  // what it installed, on a first run
  return got;
}

void run_sdk(const std::string& sdk) {
  const std::string dir = scratch_dir();
  const Installed in = install(dir);
  if (in.node.empty()) return;
  DaemonProcess daemon(dir);
  ASSERT_TRUE(daemon.start()) << daemon.log();
  const Run r = run_limited({in.node, kCompatDir + "/run.mjs", "--socket", daemon.socket(), "--modules", in.modules,
                             "--sdk", sdk},
                            dir, "node-" + sdk, std::chrono::seconds(480));
  std::cout << r.out << r.err;
  EXPECT_FALSE(r.timed_out) << "node's tests did not finish";
  EXPECT_EQ(r.exit_code, 0) << "the " << sdk << " tests failed (output above)";
  EXPECT_TRUE(daemon.running());
  EXPECT_EQ(daemon.stop(), 0) << "llmd did not stop cleanly after the client tests:\n" << daemon.log();
}

// openai 4.x: node-fetch with an http.Agent whose connections are the socket.
TEST(OpenAiSdk, V4) { run_sdk("openai4"); }

// The latest major (fetch: undici with a socket-connecting dispatcher).
TEST(OpenAiSdk, Latest) { run_sdk("openai"); }

}  // namespace
}  // namespace llmd::test
