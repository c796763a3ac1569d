// fork/exec with captured output (see process.h).
#include "bench/process.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

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

}  // namespace llmd::bench
