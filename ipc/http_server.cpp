// HTTP/1.1 over a Unix socket (see http_server.h).
#include "ipc/http_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <optional>
#include <unordered_map>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "ipc/http_request_reader.h"

namespace llmd::ipc {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

struct HttpServer::State {
  HttpLimits limits;
  Handler handler;
  std::size_t connections = 0;
  std::size_t responding = 0;
  std::unordered_map<std::uint32_t, std::uint32_t> per_uid;  // open connections by peer uid (none: erased)
  ConnectionStats stats;
};

const char* status_reason(unsigned status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

namespace {

// The peer's uid, gid and pid (SO_PEERCRED): all a connection's admission needs.
PeerCredentials read_peer(int fd) {
  PeerCredentials p;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    p.uid = cred.uid;
    p.gid = cred.gid;
    p.pid = cred.pid;
  } else {
    // Without credentials the caller is nobody in particular: never root.
    p.uid = p.gid = 65534;
  }
  return p;
}

// Its supplementary groups (SO_PEERGROUPS), for an admitted connection (the admin check).
void read_peer_groups(int fd, PeerCredentials& p) {
  std::vector<gid_t> groups(64);
  socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) != 0 && errno == ERANGE) {
    groups.resize(glen / sizeof(gid_t));
    glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) != 0) glen = 0;
  }
  for (std::size_t i = 0; i < glen / sizeof(gid_t) && i < groups.size(); ++i) p.groups.push_back(groups[i]);
}

std::string error_json(const std::string& message, const std::string& type, const std::string& code,
                       const std::string& param = {}) {
  // Kept free of a JSON library: the messages here are fixed ASCII.
  return "{\"error\":{\"message\":\"" + message + "\",\"type\":\"" + type + "\",\"param\":" +
         (param.empty() ? std::string("null") : "\"" + param + "\"") + ",\"code\":\"" + code + "\"}}";
}

std::string format_response(unsigned status, const std::string& body, const std::string& content_type,
                            const std::vector<Header>& headers, bool keep_alive) {
  std::string s = "HTTP/1.1 " + std::to_string(status) + " " + status_reason(status) + "\r\n";
  s += "Content-Type: " + content_type + "\r\n";
  s += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  for (const auto& [k, v] : headers) s += k + ": " + v + "\r\n";
  s += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  s += body;
  return s;
}

class Connection;

class ResponderImpl final : public Responder {
 public:
  ResponderImpl(std::shared_ptr<Connection> conn, bool keep_alive) : conn_(std::move(conn)), keep_alive_(keep_alive) {}
  void reply(unsigned status, std::string body, std::string content_type, std::vector<Header> headers) override;
  void start_events() override;
  void event(const std::string& data) override;
  void named_event(const std::string& name, const std::string& data) override;
  void end_events() override;
  bool closed() const override { return closed_; }
  void on_close(std::function<void()> cb) override {
    if (closed_ && !done_) {
      cb();
      return;
    }
    on_close_.push_back(std::move(cb));
  }
  void notify_closed() {
    if (closed_) return;
    closed_ = true;
    if (done_) return;
    auto cbs = std::move(on_close_);
    for (auto& cb : cbs) cb();
  }

 private:
  std::shared_ptr<Connection> conn_;
  bool keep_alive_;
  bool done_ = false;
  bool streaming_ = false;
  bool closed_ = false;
  std::vector<std::function<void()>> on_close_;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // Counted in the server's totals (by the caller of the constructor) until destroyed.
  Connection(local::socket socket, std::shared_ptr<HttpServer::State> state, PeerCredentials peer)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), state_(std::move(state)), peer_(std::move(peer)) {}
  ~Connection() {
    --state_->connections;
    auto it = state_->per_uid.find(peer_.uid);
    if (it != state_->per_uid.end() && --it->second == 0) state_->per_uid.erase(it);
  }

  void start() { read_request(); }

  void reject(unsigned status, const std::string& body) {
    respond(format_response(status, body, "application/json", {{"Retry-After", "1"}}, false), false);
  }

  // A whole response; afterwards the next request is read (keep-alive) or the connection closes.
  void respond(std::string data, bool keep_alive) {
    if (keep_alive) read_after_flush_ = true;
    else close_after_flush_ = true;
    send(std::move(data));
  }
  void send(std::string data) {
    if (closed_) return;
    out_.push_back(std::move(data));
    if (!writing_) write_next();
  }
  void close_after_flush() {
    close_after_flush_ = true;
    if (!writing_) write_next();
  }
  void close() {
    if (closed_) return;
    closed_ = true;
    set_responding(false);
    ++timer_gen_;
    timer_.cancel();
    boost::system::error_code ec;
    socket_.shutdown(local::socket::shutdown_both, ec);
    socket_.close(ec);
    if (auto r = responder_.lock()) r->notify_closed();
  }

 private:
  void set_responding(bool on) {
    if (on == responding_) return;
    responding_ = on;
    if (on) ++state_->responding;
    else --state_->responding;
  }

  void arm_timer(std::chrono::milliseconds after, bool on_read) {
    const std::uint64_t gen = ++timer_gen_;
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this(), gen, on_read](boost::system::error_code ec) {
      if (ec || gen != self->timer_gen_) return;  // cancelled or superseded
      if (on_read) {
        self->timed_out_ = true;
        boost::system::error_code ignored;
        self->socket_.cancel(ignored);
      } else {
        self->close();  // the client stopped reading
      }
    });
  }
  void disarm_timer() {
    ++timer_gen_;
    timer_.cancel();
  }

  // A request's head must be complete within header_timeout of its first byte (of the accept, for
  // a connection's first request), and the whole request within request_timeout: a client that
  // trickles a head cannot hold a connection for long. Between keep-alive requests the connection
  // may idle for request_timeout with nothing sent.
  void read_request() {
    if (closed_) return;
    parser_.emplace();
    apply_limits(*parser_, state_->limits);
    timed_out_ = false;
    if (requests_ == 0 || buffer_.size() != 0) return read_head();
    phase_ = Phase::idle;
    arm_timer(state_->limits.request_timeout, true);
    socket_.async_read_some(buffer_.prepare(kIdleReadBytes),
                            [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                              self->disarm_timer();
                              if (self->closed_) return;
                              if (ec) return self->close();  // gone, or idle too long: nothing was begun
                              self->buffer_.commit(n);
                              self->read_head();
                            });
  }

  void read_head() {
    phase_ = Phase::head;
    request_started_ = std::chrono::steady_clock::now();
    arm_timer(std::min(state_->limits.header_timeout, state_->limits.request_timeout), true);
    http::async_read_header(socket_, buffer_, *parser_,
                            [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                              self->on_head(ec);
                            });
  }

  void on_head(boost::system::error_code ec) {
    disarm_timer();
    if (closed_) return;
    if (ec) return on_read(ec);
    if (parser_->is_done()) return on_read({});
    phase_ = Phase::body;
    const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                             request_started_);
    arm_timer(std::max(state_->limits.request_timeout - spent, std::chrono::milliseconds(1)), true);
    http::async_read(socket_, buffer_, *parser_, [self = shared_from_this()](boost::system::error_code read_ec,
                                                                              std::size_t) { self->on_read(read_ec); });
  }

  void on_read(boost::system::error_code ec) {
    disarm_timer();
    if (closed_) return;
    if (ec) {
      if (timed_out_ && phase_ == Phase::head) {
        // The head's deadline is the shorter of the two; the answer names the one that applied.
        const HttpLimits& lim = state_->limits;
        const bool head_deadline = lim.header_timeout <= lim.request_timeout;
        const auto ms = head_deadline ? lim.header_timeout : lim.request_timeout;
        reject(408, error_json("the request head did not arrive within " + std::to_string(ms.count()) + " ms",
                               "invalid_request_error", "request_timeout",
                               head_deadline ? "header-timeout-ms" : "request-timeout-ms"));
      } else if (timed_out_) {
        reject(408, error_json("the request did not arrive within " +
                                   std::to_string(state_->limits.request_timeout.count()) + " ms",
                               "invalid_request_error", "request_timeout", "request-timeout-ms"));
      } else if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
                 ec == asio::error::operation_aborted) {
        close();
      } else if (ec == http::error::body_limit) {
        reject(413, error_json("the request body is larger than " + std::to_string(state_->limits.max_body_bytes) +
                                   " bytes",
                               "invalid_request_error", "body_too_large", "max-body-bytes"));
      } else if (ec == http::error::header_limit) {
        reject(431, error_json("the request headers are too large", "invalid_request_error", "headers_too_large",
                               "max-header-bytes"));
      } else {
        reject(400, error_json("malformed HTTP request", "invalid_request_error", "bad_request"));
      }
      return;
    }
    ++requests_;
    set_responding(true);
    auto msg = parser_->release();
    HttpRequest req = to_http_request(msg, peer_);
    auto responder = std::make_shared<ResponderImpl>(shared_from_this(), msg.keep_alive());
    responder_ = responder;
    watch_for_hangup();
    // No exception leaves a handler: a bug in one request must not take the daemon down.
    try {
      state_->handler(std::move(req), responder);
    } catch (const std::exception&) {
      responder->reply(500, error_json("internal error while handling the request", "server_error", "internal_error"),
                       "application/json", {});
    }
  }

  // While a request is handled, notice the client hanging up (EOF) without consuming anything it
  // may have sent ahead (a pipelined request stays for the parser).
  void watch_for_hangup() {
    if (watching_ || closed_) return;
    watching_ = true;
    socket_.async_wait(local::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
      self->watching_ = false;
      if (ec || self->closed_) return;
      char c;
      const ssize_t n = ::recv(self->socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        self->close();
      } else if (n < 0) {
        self->watch_for_hangup();
      }
      // n > 0: the client sent more; it is not gone. Stop watching.
    });
  }

  void write_next() {
    if (closed_) return;
    if (out_.empty()) {
      writing_ = false;
      if (close_after_flush_) {
        close();
      } else if (read_after_flush_) {
        read_after_flush_ = false;
        set_responding(false);
        responder_.reset();
        read_request();
      }
      return;
    }
    writing_ = true;
    arm_timer(state_->limits.write_timeout, false);
    asio::async_write(socket_, asio::buffer(out_.front()),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                        self->disarm_timer();
                        if (ec) {
                          self->close();
                          return;
                        }
                        self->out_.pop_front();
                        self->write_next();
                      });
  }

  enum class Phase { idle, head, body };
  static constexpr std::size_t kIdleReadBytes = 4096;

  local::socket socket_;
  asio::steady_timer timer_;
  std::uint64_t timer_gen_ = 0;
  bool timed_out_ = false;
  Phase phase_ = Phase::head;
  std::chrono::steady_clock::time_point request_started_;
  std::shared_ptr<HttpServer::State> state_;
  PeerCredentials peer_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  std::deque<std::string> out_;
  bool writing_ = false;
  bool close_after_flush_ = false;
  bool read_after_flush_ = false;
  bool closed_ = false;
  bool watching_ = false;
  bool responding_ = false;
  std::uint64_t requests_ = 0;
  std::weak_ptr<ResponderImpl> responder_;
};

void ResponderImpl::reply(unsigned status, std::string body, std::string content_type, std::vector<Header> headers) {
  if (done_ || streaming_) return;
  done_ = true;
  conn_->respond(format_response(status, body, content_type, headers, keep_alive_), keep_alive_);
}

void ResponderImpl::start_events() {
  if (done_ || streaming_) return;
  streaming_ = true;
  conn_->send(
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n");
}

void ResponderImpl::event(const std::string& data) {
  if (done_ || !streaming_) return;
  conn_->send("data: " + data + "\n\n");
}

void ResponderImpl::named_event(const std::string& name, const std::string& data) {
  if (done_ || !streaming_) return;
  conn_->send("event: " + name + "\ndata: " + data + "\n\n");
}

void ResponderImpl::end_events() {
  if (done_ || !streaming_) return;
  done_ = true;
  conn_->close_after_flush();
}

}  // namespace

HttpServer::HttpServer(asio::io_context& io, HttpLimits limits, Handler handler)
    : io_(io), state_(std::make_shared<State>()) {
  state_->limits = limits;
  state_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop_accepting(); }

void HttpServer::set_limits(const HttpLimits& limits) { state_->limits = limits; }
std::size_t HttpServer::connections() const { return state_->connections; }
ConnectionStats HttpServer::connection_stats() const {
  ConnectionStats out = state_->stats;
  out.open = state_->connections;
  out.users = state_->per_uid.size();
  out.max_connections = state_->limits.max_connections;
  out.max_connections_per_user = state_->limits.max_connections_per_user;
  return out;
}
std::size_t HttpServer::responding() const { return state_->responding; }
const HttpLimits& HttpServer::limits() const { return state_->limits; }

Status HttpServer::listen_on_fd(int fd) {
  acceptor_ = std::make_unique<local::acceptor>(io_);
  boost::system::error_code ec;
  acceptor_->assign(local(), fd, ec);
  if (!ec) acceptor_->native_non_blocking(true, ec);
  if (ec) return errno_error(ec.value(), "using the inherited socket");
  accept();
  return {};
}

Status HttpServer::listen_on_path(const std::string& path) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
    return Error(Errc::invalid_argument, "socket path must be 1 to " + std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                                             " bytes: " + path);
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code fec;
  if (!parent.empty()) std::filesystem::create_directories(parent, fec);
  if (fec) return errno_error(fec.value(), "creating the socket directory " + parent.string());

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error(Errc::invalid_argument, "refusing to replace " + path + ": it exists and is not a socket");
    }
    // A socket someone still serves on is not stale.
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    const bool live = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (live) return Error(Errc::busy, "another process is serving on " + path);
    if (::unlink(path.c_str()) != 0) return errno_error(errno, "removing the stale socket " + path);
  }

  acceptor_ = std::make_unique<local::acceptor>(io_);
  boost::system::error_code ec;
  acceptor_->open(local(), ec);
  if (!ec) acceptor_->bind(local::endpoint(path), ec);
  if (ec) return errno_error(ec.value(), "binding " + path);
  bound_path_ = path;
  if (::chmod(path.c_str(), 0666) != 0) return errno_error(errno, "chmod 0666 " + path);
  // The kernel's largest queue (net.core.somaxconn): a burst of connects waits there, not refused
  // with EAGAIN, while the io thread drains it.
  acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) acceptor_->native_non_blocking(true, ec);
  if (ec) return errno_error(ec.value(), "listening on " + path);
  accept();
  return {};
}

void HttpServer::accept() {
  acceptor_->async_wait(local::acceptor::wait_read, [this](boost::system::error_code ec) {
    if (ec == asio::error::operation_aborted || !acceptor_ || !acceptor_->is_open()) return;
    if (!ec && drain_backlog()) return accept();
    // Out of descriptors or similar: try again shortly rather than spinning.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
    timer->async_wait([this, timer](boost::system::error_code wec) {
      if (!wec && acceptor_ && acceptor_->is_open()) accept();
    });
  });
}

// Accepts what the listen queue holds, up to a burst (then other handlers get their turn before
// the next one), and admits or refuses each connection at once. A flood of connects is thus
// drained as fast as it comes, at the cost of a few system calls per refused connection, and
// never leaves the queue full for everyone else. False on an error other than "nothing left".
bool HttpServer::drain_backlog() {
  constexpr int kBurst = 256;
  const int listener = acceptor_->native_handle();
  for (int i = 0; i < kBurst; ++i) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      admit(fd);
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return false;
  }
  return true;
}

void HttpServer::admit(int fd) {
  State& st = *state_;
  PeerCredentials peer = read_peer(fd);
  const HttpLimits& lim = st.limits;
  if (st.connections >= lim.max_connections) {
    ++st.stats.refused_global;
    return refuse(fd, "too many connections (limit max-connections = " + std::to_string(lim.max_connections) + ")",
                  "max-connections");
  }
  // Root is not limited per uid: an administrator can always reach a daemon under attack (root is
  // still counted in max-connections).
  auto& mine = st.per_uid[peer.uid];
  if (peer.uid != 0 && lim.max_connections_per_user != 0 && mine >= lim.max_connections_per_user) {
    if (mine == 0) st.per_uid.erase(peer.uid);
    ++st.stats.refused_per_user;
    return refuse(fd, "too many connections from uid " + std::to_string(peer.uid) +
                          " (limit max-connections-per-user = " + std::to_string(lim.max_connections_per_user) + ")",
                  "max-connections-per-user");
  }
  local::socket socket(io_);
  boost::system::error_code ec;
  socket.assign(local(), fd, ec);
  if (ec) {
    if (mine == 0) st.per_uid.erase(peer.uid);
    ::close(fd);
    return;
  }
  read_peer_groups(fd, peer);
  ++st.connections;
  ++mine;
  std::make_shared<Connection>(std::move(socket), state_, std::move(peer))->start();
}

// A refused connection costs no Connection, timer or buffer: its 503 (a few hundred bytes, which
// a new socket's buffer always takes) is written at once, before its request is read, and the
// socket closed.
void HttpServer::refuse(int fd, const std::string& message, const std::string& key) {
  const std::string response = format_response(
      503, error_json(message, "server_error", "too_many_connections", key), "application/json",
      {{"Retry-After", "1"}}, false);
  (void)::send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  ::close(fd);
}

void HttpServer::stop_accepting() {
  if (acceptor_) {
    boost::system::error_code ec;
    acceptor_->close(ec);
  }
  if (!bound_path_.empty()) {
    struct stat st {};
    if (::lstat(bound_path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(bound_path_.c_str());
    bound_path_.clear();
  }
}

}  // namespace llmd::ipc
