// Error mapping (see api_errors.h).
#include "ipc/api_errors.h"

namespace llmd::ipc {
namespace {

std::string type_for(unsigned status) {
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  if (status == 403) return "permission_error";
  if (status == 404) return "not_found_error";
  return "invalid_request_error";
}

// Limits end their message with "(limit KEY = VALUE)": the key becomes the error's param.
std::string limit_key(const std::string& m) {
  const auto at = m.rfind("(limit ");
  if (at == std::string::npos) return {};
  const auto eq = m.find(" = ", at);
  return eq == std::string::npos ? std::string() : m.substr(at + 7, eq - at - 7);
}

}  // namespace

HttpError http_error(unsigned status, const std::string& message, const std::string& code, const std::string& param) {
  HttpError e;
  e.status = status;
  e.body = {{"error",
             {{"message", message},
              {"type", type_for(status)},
              {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
              {"code", code}}}};
  if (status == 429 || status == 503) e.headers.push_back({"Retry-After", "1"});
  return e;
}

HttpError to_http_error(const Error& error) {
  const std::string& m = error.message();
  switch (error.code()) {
    case Errc::invalid_argument:
      if (m.rfind("context_length_exceeded", 0) == 0) return http_error(400, m, "context_length_exceeded");
      return http_error(400, m, "invalid_request");
    case Errc::not_found: return http_error(404, m, "not_found");
    case Errc::permission_denied: return http_error(403, m, "permission_denied");
    case Errc::unsupported: return http_error(400, m, "unsupported");
    case Errc::busy: return http_error(409, m, "busy");
    case Errc::resource_exhausted: return http_error(429, m, "limit_exceeded", limit_key(m));
    // The state directory's file system is full (or below disk-reserve-mib): nothing the caller
    // can change by waiting a second, so no Retry-After.
    case Errc::no_space: return http_error(507, m, "insufficient_storage", limit_key(m));
    case Errc::unavailable: return http_error(503, m, "unavailable");
    case Errc::cancelled: return http_error(499, m, "cancelled");
    case Errc::corrupt:
    case Errc::io_error:
    case Errc::internal: return http_error(500, m, "internal_error");
  }
  return http_error(500, m, "internal_error");
}

std::string to_wire(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

void reply_error(Responder& r, const HttpError& e) { r.reply(e.status, to_wire(e.body), "application/json", e.headers); }

}  // namespace llmd::ipc
