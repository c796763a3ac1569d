// Parser setup and request conversion shared by the HTTP server and its fuzz target (see
// http_request_reader.h).
#include "ipc/http_request_reader.h"

#include <string>

namespace llmd::ipc {
namespace http = boost::beast::http;

void apply_limits(RequestParser& parser, const HttpLimits& limits) {
  parser.body_limit(limits.max_body_bytes);
  parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
}

HttpRequest to_http_request(RequestMessage& msg, const PeerCredentials& peer) {
  HttpRequest req;
  req.method = msg.method();
  req.method_name = std::string(msg.method_string());
  const std::string target(msg.target());
  const auto q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string::npos) req.query = target.substr(q + 1);
  if (auto it = msg.find(http::field::content_type); it != msg.end()) req.content_type = std::string(it->value());
  req.body = std::move(msg.body());
  req.peer = peer;
  return req;
}

}  // namespace llmd::ipc
