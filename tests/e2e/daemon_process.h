// The real llmd, started by a test: its own temp socket and state directory, stderr in a log
// file, and a NOTIFY_SOCKET the test listens on (so it knows when llmd is READY, and sees STOPPING
// and WATCHDOG messages).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "tools/http_client/http_client.h"
#include "common/result.h"

namespace llmd::test {

struct DaemonOptions {
  std::string model;                 // default: stories260K
  std::vector<std::string> args;     // extra command-line arguments (unless given here: --socket
                                     // DIR/llmd.sock, --threads 2, --ctx 2048, --config /dev/null,
                                     // and --bus none when neither --bus nor the --config file names
                                     // a bus)
  std::vector<std::string> env;      // extra NAME=VALUE
  bool wait_ready = true;
};

class DaemonProcess {
 public:
  // dir: a scratch directory; the socket, state and log go there.
  DaemonProcess(std::string dir, DaemonOptions options = {});
  ~DaemonProcess();  // SIGKILL if still running

  // Starts llmd and (unless wait_ready is false) waits for READY=1. Errors carry the log's tail.
  Status start();
  // Sends sig and waits for the exit; returns the wait status.
  int stop(int sig = SIGTERM, std::chrono::seconds limit = std::chrono::seconds(60));
  // SIGKILL, no grace.
  void kill9();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  const std::string& socket() const { return socket_; }
  const std::string& state_dir() const { return state_dir_; }
  std::string log() const;

  // Notifications received so far ("READY=1\nSTATUS=...", "WATCHDOG=1", ...), in order.
  std::vector<std::string> notifications(std::chrono::milliseconds wait = std::chrono::milliseconds(0));

  client::HttpClient client() const { return client::HttpClient(socket_); }

 private:
  std::string dir_, socket_, state_dir_, log_path_, notify_path_;
  DaemonOptions options_;
  pid_t pid_ = -1;
  int notify_fd_ = -1;
  std::vector<std::string> notes_;
};

// The llmd and llmctl binaries of this build.
std::string llmd_binary();
std::string llmctl_binary();

// Runs a program, returns (exit code, stdout). stdin from `input`.
struct ProgramResult {
  int exit_code = -1;
  std::string out, err;
};
ProgramResult run_program(const std::vector<std::string>& argv, const std::string& input = {},
                const std::vector<std::string>& env = {});

}  // namespace llmd::test
