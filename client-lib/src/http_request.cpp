// See http_request.h.
#include "client-lib/src/http_request.h"

namespace llmd::client {

std::string format_request(std::string_view method, std::string_view target, std::string_view body) {
  std::string req;
  req.reserve(body.size() + 160);
  req.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: llmd\r\n");
  if (!body.empty() || method == "POST") {
    req.append("Content-Type: application/json\r\nContent-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  req.append("Connection: close\r\n\r\n").append(body);
  return req;
}

}  // namespace llmd::client
