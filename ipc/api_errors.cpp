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

namespace {

// The status and OpenAI's four fields, from the code, the reason and the param.
HttpError openai_error(const Error& error) {
  const std::string& m = error.message();
  const std::string& param = error.param();
  switch (error.code()) {
    case Errc::invalid_argument:
      if (error.reason() == Reason::context_length_exceeded) return http_error(400, m, "context_length_exceeded", param);
      return http_error(400, m, "invalid_request", param);
    case Errc::not_found: return http_error(404, m, "not_found", param);
    case Errc::permission_denied: return http_error(403, m, "permission_denied", param);
    case Errc::unsupported: return http_error(400, m, "unsupported", param);
    case Errc::busy: return http_error(409, m, "busy", param);
    case Errc::resource_exhausted: return http_error(429, m, "limit_exceeded", param);
    // The state directory's file system is full (or below disk-reserve-mib): nothing the caller
    // can change by waiting a second, so no Retry-After.
    case Errc::no_space: return http_error(507, m, "insufficient_storage", param);
    case Errc::unavailable: return http_error(503, m, "unavailable", param);
    case Errc::cancelled: return http_error(499, m, "cancelled", param);
    case Errc::corrupt:
    case Errc::io_error:
    case Errc::internal: return http_error(500, m, "internal_error", param);
  }
  return http_error(500, m, "internal_error", param);
}

}  // namespace

HttpError to_http_error(const Error& error) {
  HttpError e = openai_error(error);
  // The limit's value and what the request reached, for a program that adapts (a shorter prompt,
  // fewer requests at once): llmd's own fields beside OpenAI's four.
  const ErrorDetail& d = error.detail();
  if (d.limit) e.body["error"]["limit"] = *d.limit;
  if (d.actual) e.body["error"]["actual"] = *d.actual;
  return e;
}

std::string to_wire(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

void reply_error(Responder& r, const HttpError& e) { r.reply(e.status, to_wire(e.body), "application/json", e.headers); }

}  // namespace llmd::ipc
