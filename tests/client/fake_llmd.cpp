// The scripted socket (see fake_llmd.h).
#include "tests/client/fake_llmd.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace llmd::test {

FakeLlmd::FakeLlmd(std::string path, std::vector<Script> scripts) : path_(std::move(path)) {
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
  ::unlink(path_.c_str());
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 16) != 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  if (::pipe(stop_) != 0) stop_[0] = stop_[1] = -1;
  acceptor_ = std::thread([this, scripts = std::move(scripts)] {
    while (listen_fd_ >= 0) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0 || (p[1].revents & POLLIN) != 0) return;
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      const int n = accepted_++;
      Script s = scripts.empty() ? Script() : scripts[std::min<std::size_t>(n, scripts.size() - 1)];
      workers_.emplace_back([c, s] {
        if (s) s(c);
        ::close(c);
      });
    }
  });
}

FakeLlmd::~FakeLlmd() {
  const char x = 'x';
  [[maybe_unused]] const ssize_t n = ::write(stop_[1], &x, 1);
  acceptor_.join();
  for (auto& w : workers_) w.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  ::close(stop_[0]);
  ::close(stop_[1]);
  ::unlink(path_.c_str());
}

std::string FakeLlmd::read_request(int fd) {
  std::string req;
  char buf[4096];
  std::size_t want = std::string::npos;
  while (want == std::string::npos || req.size() < want) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    req.append(buf, static_cast<std::size_t>(n));
    const auto end = req.find("\r\n\r\n");
    if (want == std::string::npos && end != std::string::npos) {
      std::size_t length = 0;
      if (const auto cl = req.find("Content-Length: "); cl != std::string::npos && cl < end) {
        length = std::stoul(req.substr(cl + 16));
      }
      want = end + 4 + length;
    }
  }
  return req;
}

void FakeLlmd::send_all(int fd, const std::string& bytes) {
  for (std::size_t off = 0; off < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

bool FakeLlmd::wait_for_close(int fd, int limit_ms) {
  char buf[256];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, limit_ms) <= 0) return false;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return true;
  }
}

std::string FakeLlmd::json_answer(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

std::string FakeLlmd::event_stream_head() {
  return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
}

std::string FakeLlmd::event(const std::string& data) { return "data: " + data + "\n\n"; }

}  // namespace llmd::test
