// One HTTP/1.1 request and its answer, on its own non-blocking connection to llmd's Unix socket:
// the library's unit of work (llmclient.h, "Clients and requests"). It does I/O only when told the
// socket is ready and has no callbacks: on_ready() hands back the Server-Sent Events that arrived,
// and the owner (the client core) decides what to do with them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "client-lib/src/http_request.h"
#include "client-lib/src/failure.h"

namespace llmc::detail {

class ResponseParser;  // Beast's parser, kept out of this header

struct Answer {
  int status = 0;             // 0 until the head arrived
  std::string content_type;
  long retry_after_s = -1;
  std::string body;           // the whole body, unless it is an event stream
  bool event_stream = false;  // text/event-stream: the body went out as events instead
};

class Exchange {
 public:
  enum class State {
    connect_later,  // llmd's listen backlog was full (EAGAIN): connect() again later
    connecting,     // connect() in progress: wait until writable
    sending,
    receiving,
    done,           // the whole answer arrived
    failed,
  };

  Exchange(std::string socket_path, std::string request);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // Opens a connection (again, after connect_later) and sends what it can.
  void connect();
  // Does the I/O that epoll's `events` allow; appends each complete event's data to `events_out`.
  void on_ready(std::uint32_t events, std::vector<std::string>& events_out);
  // Closes the connection (llmd cancels a request whose connection closes). Idempotent.
  void close();

  State state() const { return state_; }
  int fd() const { return fd_; }
  std::uint32_t wanted_events() const;  // EPOLLIN / EPOLLOUT, 0 when nothing is to wait for
  const Failure& error() const { return failure_; }
  Answer& answer() { return answer_; }

 private:
  void fail(Failure f);
  void send_some();
  void receive(std::vector<std::string>& events_out);
  void parse(std::vector<std::string>& events_out);
  void take_head();
  void take_body(const char* data, std::size_t size, std::vector<std::string>& events_out);

  std::string path_;
  std::string request_;
  std::size_t sent_ = 0;
  int fd_ = -1;
  State state_ = State::connect_later;
  Failure failure_;
  Failure send_error_;  // llmd may answer (413, 503) and close before reading everything
  Answer answer_;
  std::unique_ptr<ResponseParser> parser_;
  std::string pending_;  // received, not yet taken by the parser
  bool eof_ = false;
};

// The bytes of a request (one per connection: "Connection: close"), shared with HttpClient.
using llmd::client::format_request;

// Whether something listens on the Unix socket `path`: 0, or the errno of connect() (ENAMETOOLONG
// for a path too long). The connection is closed at once.
int probe_socket(const std::string& path);

}  // namespace llmc::detail
