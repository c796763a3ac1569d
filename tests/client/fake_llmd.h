// A scripted stand-in for llmd's socket, for the client library's tests that need a daemon to
// misbehave (say nothing, send garbage, hang up mid-answer, answer in pieces). Each accepted
// connection runs the next script on its own thread. Tests of real behaviour use the real llmd
// (tests/e2e).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace llmd::test {

class FakeLlmd {
 public:
  // What to do with one connection: read the request (read_request), answer, return to close.
  using Script = std::function<void(int fd)>;

  // Listens on `path`; the i-th connection runs scripts[i] (the last one for later connections).
  FakeLlmd(std::string path, std::vector<Script> scripts);
  ~FakeLlmd();  // stops accepting, joins every connection
  FakeLlmd(const FakeLlmd&) = delete;
  FakeLlmd& operator=(const FakeLlmd&) = delete;

  const std::string& path() const { return path_; }
  int connections() const { return accepted_.load(); }

  // Reads a request's head and its Content-Length body; returns them ("" if the peer closed).
  static std::string read_request(int fd);
  // Sends all of `bytes` (ignoring a peer that went away).
  static void send_all(int fd, const std::string& bytes);
  // Waits until the peer closes the connection (at most `limit_ms`); true if it did.
  static bool wait_for_close(int fd, int limit_ms);

  // Canned answers.
  static std::string json_answer(int status, const std::string& body);
  static std::string event_stream_head();
  static std::string event(const std::string& data);  // "data: ...\n\n"

 private:
  std::string path_;
  int listen_fd_ = -1;
  int stop_[2] = {-1, -1};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
};

}  // namespace llmd::test
