// One request on one connection (see exchange.h).
#include "client-lib/src/exchange.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "client-lib/src/sse.h"

namespace llmc::detail {
namespace http = boost::beast::http;

namespace {

// A whole (non-streamed) answer larger than this is refused: llmd's largest answers (a session
// with its messages, the status) are far smaller.
constexpr std::size_t kMaxBody = 256u << 20;

long parse_retry_after(std::string_view v) {
  long s = 0;
  if (v.empty() || v.size() > 9) return -1;
  for (const char ch : v) {
    if (ch < '0' || ch > '9') return -1;
    s = s * 10 + (ch - '0');
  }
  return s;
}

}  // namespace

class ResponseParser {
 public:
  ResponseParser() { parser.body_limit(std::numeric_limits<std::uint64_t>::max()); }  // Beast 1.74: no "none"
  http::response_parser<http::buffer_body> parser;
  llmd::client::SseParser sse;
  char buffer[16384];
};

int probe_socket(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path) return ENAMETOOLONG;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int err = 0;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) err = errno;
  ::close(fd);
  return err == EAGAIN || err == EINPROGRESS ? 0 : err;  // a full backlog: something listens
}

Exchange::Exchange(std::string socket_path, std::string request)
    : path_(std::move(socket_path)), request_(std::move(request)), parser_(std::make_unique<ResponseParser>()) {}

Exchange::~Exchange() { close(); }

void Exchange::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Exchange::fail(Failure f) {
  failure_ = std::move(f);
  state_ = State::failed;
}

std::uint32_t Exchange::wanted_events() const {
  switch (state_) {
    case State::connecting:
    case State::sending: return EPOLLOUT;
    case State::receiving: return EPOLLIN;
    default: return 0;
  }
}

void Exchange::connect() {
  close();
  sockaddr_un addr{};
  if (path_.empty() || path_.size() >= sizeof addr.sun_path) {
    return fail(failure(LLMC_ERR_INVALID_ARGUMENT, "socket path too long for a Unix socket: " + path_));
  }
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return fail(from_errno(errno, "creating a socket"));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    if (err == EAGAIN) {  // the listen backlog is full: not an error yet
      close();
      state_ = State::connect_later;
      return;
    }
    if (err == EINPROGRESS) {
      state_ = State::connecting;
      return;
    }
    close();
    return fail(from_connect_errno(err, path_));
  }
  state_ = State::sending;
  send_some();
}

void Exchange::send_some() {
  while (sent_ < request_.size()) {
    const ssize_t n = ::send(fd_, request_.data() + sent_, request_.size() - sent_, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // llmd may have answered already (and closed): read that answer before reporting this.
      send_error_ = from_errno(errno, "sending the request to llmd");
      break;
    }
    sent_ += static_cast<std::size_t>(n);
  }
  state_ = State::receiving;
}

void Exchange::on_ready(std::uint32_t events, std::vector<std::string>& events_out) {
  if (state_ == State::connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return fail(from_connect_errno(err, path_));  // the owner closes: it watches the fd
    state_ = State::sending;
  }
  if (state_ == State::sending && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) send_some();
  if (state_ == State::receiving && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) receive(events_out);
}

void Exchange::receive(std::vector<std::string>& events_out) {
  char in[16384];
  while (state_ == State::receiving) {
    const ssize_t n = ::recv(fd_, in, sizeof in, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (send_error_) return fail(send_error_);
      return fail(from_errno(errno, "reading llmd's answer"));
    }
    if (n == 0) eof_ = true;
    else pending_.append(in, static_cast<std::size_t>(n));
    parse(events_out);
    if (eof_ && state_ == State::receiving) {
      return fail(failure(LLMC_ERR_IO, "llmd closed the connection mid-answer"));
    }
  }
}

// Feeds what is pending to Beast's parser until it needs more bytes. The parser writes body bytes
// only into a buffer given to it before put(), so only those are counted as body.
void Exchange::parse(std::vector<std::string>& events_out) {
  auto& p = parser_->parser;
  while (state_ == State::receiving) {
    const bool gave_buffer = p.is_header_done();
    if (gave_buffer) {
      p.get().body().data = parser_->buffer;
      p.get().body().size = sizeof parser_->buffer;
    }
    boost::system::error_code ec;
    std::size_t used = 0;
    if (!pending_.empty()) {
      used = p.put(boost::asio::buffer(pending_), ec);
      pending_.erase(0, used);
    } else if (eof_) {
      if (!p.got_some()) {  // Beast's put_eof wants at least one byte first
        if (send_error_) return fail(send_error_);
        return fail(failure(LLMC_ERR_IO, "llmd closed the connection without answering"));
      }
      p.put_eof(ec);
      if (!ec && !p.is_done()) ec = http::error::partial_message;
    } else {
      return;  // wait for bytes
    }
    if (ec == http::error::need_buffer) ec = {};
    const bool need_more = ec == http::error::need_more;
    if (ec && !need_more) {
      if (!p.is_header_done() && send_error_) return fail(send_error_);
      if (ec == http::error::partial_message) {
        return fail(failure(LLMC_ERR_IO, p.is_header_done() ? "llmd closed the connection mid-answer"
                                                           : "llmd closed the connection without answering"));
      }
      return fail(failure(LLMC_ERR_PROTOCOL, "malformed answer from llmd: " + ec.message()));
    }
    if (p.is_header_done() && answer_.status == 0) take_head();
    const std::size_t got = gave_buffer ? sizeof parser_->buffer - p.get().body().size : 0;
    if (got > 0) take_body(parser_->buffer, got, events_out);
    if (state_ != State::receiving) return;
    if (p.is_done()) {
      state_ = State::done;
      return;
    }
    if (need_more) {
      if (eof_) {
        return fail(failure(LLMC_ERR_IO, p.is_header_done() ? "llmd closed the connection mid-answer"
                                                           : "llmd closed the connection without answering"));
      }
      return;  // an incomplete head or chunk line: wait for the rest
    }
    if (used == 0 && got == 0 && !eof_) return;
  }
}

void Exchange::take_head() {
  auto& msg = parser_->parser.get();
  answer_.status = static_cast<int>(msg.result_int());
  if (answer_.status == 0) answer_.status = -1;  // never "no answer" once there is one
  if (const auto it = msg.find(http::field::content_type); it != msg.end()) answer_.content_type = std::string(it->value());
  if (const auto it = msg.find(http::field::retry_after); it != msg.end()) {
    answer_.retry_after_s = parse_retry_after(std::string_view(it->value().data(), it->value().size()));
  }
  answer_.event_stream = answer_.content_type.rfind("text/event-stream", 0) == 0;
}

void Exchange::take_body(const char* data, std::size_t size, std::vector<std::string>& events_out) {
  if (answer_.event_stream) {
    for (auto& ev : parser_->sse.push(std::string_view(data, size))) events_out.push_back(std::move(ev));
    return;
  }
  if (answer_.body.size() + size > kMaxBody) {
    return fail(failure(LLMC_ERR_PROTOCOL, "llmd's answer is larger than 256 MiB"));
  }
  answer_.body.append(data, size);
}

}  // namespace llmc::detail
