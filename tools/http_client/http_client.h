// A small blocking HTTP/1.1 client for llmd's Unix socket, used by the tests and the benchmarks
// (programs use libllmclient: include/llmclient/llmclient.h). One request per connection. Responses are read with
// Beast's parser; an event-stream body is handed over event by event as it arrives.
//
// Every wait can be interrupted: set the flag given to the client (e.g. from a SIGINT handler)
// and the current call returns Errc::cancelled within ~50 ms, closing the connection, which
// makes llmd cancel the request.
//
// Thread-safety: one client per thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "client-lib/src/socket_path.h"
#include "common/result.h"

namespace llmd::client {

struct Response {
  unsigned status = 0;
  std::string content_type;
  std::string body;  // whole body (empty for an event stream read with on_event)
};

class HttpClient {
 public:
  explicit HttpClient(std::string socket_path, const std::atomic<bool>* interrupt = nullptr,
                      std::chrono::milliseconds timeout = std::chrono::minutes(10))
      : path_(std::move(socket_path)), interrupt_(interrupt), timeout_(timeout) {}

  // Sends a request and reads the response. If the response is an event stream, each event's data
  // goes to on_event (return false to stop early); otherwise the body is returned whole.
  // Errors: unavailable (no daemon listening: the message says so), permission_denied,
  // cancelled (interrupted), io_error (connection lost, timeout), invalid_argument (a malformed
  // response).
  Result<Response> request(std::string_view method, std::string_view target, std::string_view body = {},
                           const std::function<bool(const std::string&)>& on_event = {});

  const std::string& socket_path() const { return path_; }

 private:
  std::string path_;
  const std::atomic<bool>* interrupt_;
  std::chrono::milliseconds timeout_;
};

}  // namespace llmd::client
