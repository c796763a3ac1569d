// Request helpers for the end-to-end tests.
#pragma once

#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/http_client/http_client.h"
#include "tests/e2e/daemon_process.h"
#include "tests/support/test_env.h"

namespace llmd::test {

struct JsonReply {
  unsigned status = 0;
  nlohmann::json body;
  std::string raw;
};

inline JsonReply call(const client::HttpClient& c, const std::string& method, const std::string& path,
                      const std::string& body = {}) {
  client::HttpClient copy = c;
  auto r = copy.request(method, path, body);
  EXPECT_TRUE(r) << method << " " << path << ": " << r.error().to_string();
  if (!r) return {};
  return {r->status, nlohmann::json::parse(r->body, nullptr, false), r->body};
}

inline JsonReply call(const client::HttpClient& c, const std::string& method, const std::string& path,
                      const nlohmann::json& body) {
  return call(c, method, path, body.dump());
}

struct Streamed {
  unsigned status = 0;
  std::vector<nlohmann::json> events;  // parsed events, [DONE] excluded
  bool done_marker = false;
  std::string text;                    // concatenated delta/text
};

inline Streamed stream(const client::HttpClient& c, const std::string& path, nlohmann::json body) {
  body["stream"] = true;
  Streamed s;
  client::HttpClient copy = c;
  auto r = copy.request("POST", path, body.dump(), [&](const std::string& data) {
    if (data == "[DONE]") {
      s.done_marker = true;
      return true;
    }
    auto ev = nlohmann::json::parse(data, nullptr, false);
    EXPECT_FALSE(ev.is_discarded()) << data;
    if (ev.contains("choices") && ev["choices"].is_array() && !ev["choices"].empty()) {
      const auto& ch = ev["choices"][0];
      if (ch.contains("delta") && ch["delta"].contains("content")) s.text += ch["delta"]["content"].get<std::string>();
      if (ch.contains("text")) s.text += ch["text"].get<std::string>();
    }
    s.events.push_back(std::move(ev));
    return true;
  });
  EXPECT_TRUE(r) << r.error().to_string();
  if (r) s.status = r->status;
  return s;
}

inline nlohmann::json greedy_body(int max_tokens) { return {{"max_tokens", max_tokens}, {"temperature", 0}}; }

// A greedy completion of exactly max_tokens (ignore_eos), not streamed.
inline nlohmann::json completion(int max_tokens, const std::string& prompt) {
  nlohmann::json b = greedy_body(max_tokens);
  b["prompt"] = prompt;
  b["ignore_eos"] = true;
  b["stream"] = false;
  return b;
}

// A session turn, greedy, not streamed.
inline JsonReply session_turn(const client::HttpClient& c, const std::string& id, const std::string& text,
                              int max_tokens) {
  auto body = greedy_body(max_tokens);
  body["content"] = text;
  body["stream"] = false;
  return call(c, "POST", "/v1/sessions/" + id + "/messages", body);
}

// A connection to the socket, or -1. `flags`: more socket(2) type flags (SOCK_NONBLOCK: -1 at
// once when the listen backlog is full, EAGAIN).
inline int connect_to(const std::string& sock, int flags = 0) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, sock.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Everything the server sends until it closes (or `limit_ms` passes with nothing more).
inline std::string read_all(int fd, int limit_ms = 30000) {
  std::string out;
  char buf[4096];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, limit_ms) <= 0) break;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Connects, sends `request` as is, returns everything the server sends until it closes (the raw
// answer, headers included: the test client does not expose headers).
inline std::string raw_exchange(const std::string& sock, const std::string& request) {
  const int fd = connect_to(sock);
  EXPECT_GE(fd, 0);
  if (fd < 0) return {};
  EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  const std::string resp = read_all(fd);
  ::close(fd);
  return resp;
}

// Runs fn in a child process with the given uid/gid (real kernel credentials); returns its pid.
inline pid_t spawn_as(uid_t uid, gid_t gid, const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) _exit(100);
    _exit(fn());
  }
  return pid;
}

// A client process of `uid` (spawn_as): `threads` threads each POST /v1/completions with body(t)
// again and again, each waiting for its answer (a closed loop), until the daemon goes away. Exits
// 0 unless an answer was neither 200 nor 503.
inline pid_t spawn_completion_loop(const std::string& sock, uid_t uid, int threads,
                                   const std::function<nlohmann::json(int)>& body) {
  return spawn_as(uid, uid, [=] {
    std::vector<std::thread> ts;
    std::atomic<int> failures{0};
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        client::HttpClient c(sock);
        const std::string b = body(t).dump();
        for (int i = 0; i < 1000000; ++i) {
          auto r = c.request("POST", "/v1/completions", b);
          if (!r) return;  // the daemon stopped
          if (r->status != 200 && r->status != 503) ++failures;
        }
      });
    }
    for (auto& th : ts) th.join();
    return failures.load() == 0 ? 0 : 1;
  });
}

// The child's exit code (200 if it did not exit normally).
inline int wait_child(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

// Each set of llmd arguments is refused by --check-config with exit code 2 and a message naming
// the key.
inline void expect_refused_naming_the_key(
    const std::vector<std::pair<std::vector<std::string>, std::string>>& cases) {
  for (const auto& [args, key] : cases) {
    std::vector<std::string> argv = {llmd_binary(), "--config", "/dev/null", "--model", stories_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--check-config");
    const auto r = run_program(argv);
    EXPECT_EQ(r.exit_code, 2) << args[0] << " " << args[1];
    EXPECT_NE(r.err.find(key), std::string::npos) << r.err;
  }
}

}  // namespace llmd::test
