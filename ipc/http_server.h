// HTTP/1.1 over a Unix stream socket (Boost.Beast on Boost.Asio), on the daemon's io thread.
//
// Each connection: the caller's kernel credentials (SO_PEERCRED, SO_PEERGROUPS) are read once at
// accept. Connections are limited in total (max_connections) and per peer uid
// (max_connections_per_user; root is exempt from the latter): a connection over either is answered
// 503 at once, before its request is read, with the limit's config key in the error's "param",
// and closed; it costs a few system calls, so a flood of connects from one user is drained as fast
// as it comes and never fills the listen queue for others. Requests are read with deadlines (the
// head within header_timeout of its first byte, the whole request within request_timeout: 408
// naming the one missed), a header-size limit (431) and a body-size limit (413); malformed
// requests get 400. Responses are either whole (keep-alive) or an event stream (Server-Sent
// Events, the connection closes at its end). While a request is being handled the connection
// watches for the client going away and tells the handler (Responder::on_close) so it can cancel
// the work.
//
// Thread-safety: everything runs on the io_context's thread; Responder methods must be called there.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/http/verb.hpp>

#include "common/result.h"

namespace llmd::ipc {

struct PeerCredentials {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int32_t pid = 0;
  std::vector<std::uint32_t> groups;  // supplementary groups
};

struct HttpLimits {
  std::size_t max_body_bytes = 1u << 20;
  std::size_t max_header_bytes = 16u << 10;
  std::chrono::milliseconds request_timeout{10'000};  // to receive a whole request, and keep-alive idle
  std::chrono::milliseconds header_timeout{3'000};    // to receive a request's head, from its first
                                                      // byte (a new connection: from the accept)
  std::chrono::milliseconds write_timeout{30'000};    // a client that stops reading is dropped
  std::uint32_t max_connections = 256;
  std::uint32_t max_connections_per_user = 32;        // per peer uid, root exempt; 0: no limit
};

// Connections now, refused since the start, and the limits.
struct ConnectionStats {
  std::size_t open = 0;
  std::size_t users = 0;               // distinct uids with a connection open
  std::uint64_t refused_global = 0;    // over max_connections
  std::uint64_t refused_per_user = 0;  // over max_connections_per_user
  std::uint32_t max_connections = 0;
  std::uint32_t max_connections_per_user = 0;
};

struct HttpRequest {
  boost::beast::http::verb method = boost::beast::http::verb::unknown;
  std::string method_name;
  std::string path;   // without the query
  std::string query;  // after '?', may be empty
  std::string content_type;
  std::string body;
  PeerCredentials peer;
};

using Header = std::pair<std::string, std::string>;

// Answers one request: either reply() once, or start_events(), event()..., end_events().
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void reply(unsigned status, std::string body, std::string content_type = "application/json",
                     std::vector<Header> headers = {}) = 0;
  virtual void start_events() = 0;              // 200, text/event-stream
  virtual void event(const std::string& data) = 0;  // one "data: ..." event
  // One named event: "event: NAME" then "data: ..." (data on one line).
  virtual void named_event(const std::string& name, const std::string& data) = 0;
  virtual void end_events() = 0;                // flushes, then closes the connection
  virtual bool closed() const = 0;              // the client went away (or the connection failed)
  // Called once if the client goes away before the response is complete.
  virtual void on_close(std::function<void()> cb) = 0;
};

using Handler = std::function<void(HttpRequest&&, std::shared_ptr<Responder>)>;

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, HttpLimits limits, Handler handler);
  ~HttpServer();

  // Serves on an inherited listening socket (systemd socket activation).
  Status listen_on_fd(int fd);
  // Binds `path`: creates its parent directory, removes a stale socket left by a dead daemon (never
  // a non-socket, never a socket someone is serving on), binds with mode 0666 and listens.
  Status listen_on_path(const std::string& path);
  // Stops accepting; open connections finish what they are doing. Removes a socket this server bound.
  void stop_accepting();

  // New limits apply to connections accepted from now on (and the deadlines to requests begun).
  void set_limits(const HttpLimits& limits);
  std::size_t connections() const;
  ConnectionStats connection_stats() const;
  // Responses being produced or written (a shutdown waits for them to drain).
  std::size_t responding() const;
  const HttpLimits& limits() const;

  struct State;  // shared with the connections

 private:
  void accept();
  bool drain_backlog();
  void admit(int fd);
  static void refuse(int fd, const std::string& message, const std::string& key);

  boost::asio::io_context& io_;
  std::shared_ptr<State> state_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  std::string bound_path_;
};

// A short reason phrase for a status code ("Not Found").
const char* status_reason(unsigned status);

}  // namespace llmd::ipc
