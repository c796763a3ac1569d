// Blocking HTTP over a Unix socket (see http_client.h).
#include "tools/http_client/http_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "client-lib/src/http_request.h"
#include "client-lib/src/sse.h"

namespace llmd::client {
namespace http = boost::beast::http;

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Result<Response> HttpClient::request(std::string_view method, std::string_view target, std::string_view body,
                                     const std::function<bool(const std::string&)>& on_event) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  if (path_.size() >= sizeof(sockaddr_un::sun_path)) return Error(Errc::invalid_argument, "socket path too long: " + path_);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return errno_error(errno, "socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ECONNREFUSED || err == ENOTDIR) {
      return Error(Errc::unavailable, "llmd is not running: nothing is listening on " + path_ +
                                          (err == ENOENT ? " (no such socket)" : " (connection refused)"));
    }
    if (err == EACCES || err == EPERM) return Error(Errc::permission_denied, "no permission to connect to " + path_);
    return errno_error(err, "connecting to " + path_);
  }

  // Waits until fd is ready for `events`, watching the interrupt flag and the deadline.
  auto wait = [&](short events) -> Status {
    while (true) {
      if (interrupt_ != nullptr && interrupt_->load()) return Error(Errc::cancelled, "interrupted");
      if (std::chrono::steady_clock::now() > deadline) return Error(Errc::io_error, "timed out waiting for llmd");
      pollfd p{fd.get(), events, 0};
      const int n = ::poll(&p, 1, 50);
      if (n > 0) return {};
      if (n < 0 && errno != EINTR) return errno_error(errno, "poll");
    }
  };

  const std::string req = format_request(method, target, body);
  // llmd may answer before it has read everything (413, 503) and close: then sending fails, and
  // the answer is what matters, so it is read before the send error is reported.
  std::optional<Error> send_error;
  for (std::size_t sent = 0; sent < req.size();) {
    LLMD_TRY_STATUS(wait(POLLOUT));
    const ssize_t n = ::send(fd.get(), req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      send_error = errno_error(errno, "sending the request");
      break;
    }
    sent += static_cast<std::size_t>(n);
  }

  http::response_parser<http::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // Beast 1.74 has no "no limit"
  Response resp;
  SseParser sse;
  bool streaming = false;
  bool stopped = false;
  char body_buf[16384];
  std::string pending;  // received, not yet consumed by the parser
  char in[16384];
  bool eof = false;
  bool need_more = false;  // what is pending is an incomplete piece (a header, a chunk size line)
  while (!parser.is_done() && !stopped) {
    if ((pending.empty() || need_more) && !eof) {
      LLMD_TRY_STATUS(wait(POLLIN));
      const ssize_t n = ::recv(fd.get(), in, sizeof in, 0);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        if (send_error) return *send_error;
        return errno_error(errno, "reading the response");
      }
      if (n == 0) eof = true;
      else pending.append(in, static_cast<std::size_t>(n));
    }
    boost::system::error_code ec;
    // The parser writes body bytes only into a buffer given before put(); count only those.
    const bool gave_buffer = parser.is_header_done();
    if (gave_buffer) {
      parser.get().body().data = body_buf;
      parser.get().body().size = sizeof body_buf;
    }
    if (!pending.empty() && !(need_more && eof)) {
      const std::size_t used = parser.put(boost::asio::buffer(pending), ec);
      pending.erase(0, used);
    } else if (eof) {
      if (!parser.got_some()) {  // Beast's put_eof wants at least one byte first
        if (send_error) return *send_error;
        return Error(Errc::io_error, "llmd closed the connection without answering");
      }
      parser.put_eof(ec);
      if (!ec && !parser.is_done()) {
        if (send_error) return *send_error;
        return Error(Errc::io_error, "llmd closed the connection mid-response");
      }
    }
    need_more = ec == http::error::need_more;
    if (ec == http::error::need_buffer || need_more) ec = {};
    if (ec) {
      if (send_error && !parser.is_header_done()) return *send_error;
      if (eof && !parser.is_header_done()) return Error(Errc::io_error, "llmd closed the connection without answering");
      return Error(Errc::invalid_argument, "malformed response from llmd: " + ec.message());
    }
    if (parser.is_header_done() && resp.status == 0) {
      resp.status = parser.get().result_int();
      if (auto it = parser.get().find(http::field::content_type); it != parser.get().end()) {
        resp.content_type = std::string(it->value());
      }
      streaming = resp.content_type.rfind("text/event-stream", 0) == 0 && on_event;
    }
    const std::size_t got = gave_buffer ? sizeof body_buf - parser.get().body().size : 0;
    if (got > 0) {
      if (streaming) {
        for (auto& ev : sse.push(std::string_view(body_buf, got))) {
          if (!on_event(ev)) {
            stopped = true;
            break;
          }
        }
      } else {
        resp.body.append(body_buf, got);
      }
    }
  }
  return resp;
}

}  // namespace llmd::client
