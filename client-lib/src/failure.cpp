// Error mapping (see failure.h) and llmc_strerror.
#include "client-lib/src/failure.h"

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

namespace llmc::detail {
namespace {

llmc_code code_for_status(int status) {
  switch (status) {
    case 400:
    case 405:
    case 413:
    case 414:
    case 422:
    case 431: return LLMC_ERR_INVALID_ARGUMENT;
    case 401:
    case 403: return LLMC_ERR_PERMISSION;
    case 404: return LLMC_ERR_NOT_FOUND;
    case 408: return LLMC_ERR_TIMEOUT;
    case 409: return LLMC_ERR_BUSY;
    case 429: return LLMC_ERR_QUOTA;
    case 499: return LLMC_ERR_CANCELLED;
    case 503: return LLMC_ERR_UNAVAILABLE;
    case 507: return LLMC_ERR_NO_SPACE;
    default: break;
  }
  return status >= 500 ? LLMC_ERR_SERVER : LLMC_ERR_PROTOCOL;
}

}  // namespace

Failure from_http(int status, std::string_view body, long retry_after_s) {
  Failure f = failure(code_for_status(status), "llmd answered " + std::to_string(status));
  f.http_status = status;
  f.retry_after_s = retry_after_s;
  const auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    if (const auto e = j.find("error"); e != j.end() && e->is_object()) {
      if (const auto m = e->find("message"); m != e->end() && m->is_string()) f.message = m->get<std::string>();
      if (const auto p = e->find("param"); p != e->end() && p->is_string()) f.param = p->get<std::string>();
    } else if (status == 503 && j.value("status", "") == "stopping") {
      f.message = "llmd is stopping";
    }
  }
  return f;
}

Failure from_error_event(const std::string& code, std::string message, std::string param) {
  llmc_code c = LLMC_ERR_SERVER;
  if (code == "invalid_request" || code == "context_length_exceeded" || code == "unsupported") {
    c = LLMC_ERR_INVALID_ARGUMENT;
  } else if (code == "not_found") {
    c = LLMC_ERR_NOT_FOUND;
  } else if (code == "permission_denied") {
    c = LLMC_ERR_PERMISSION;
  } else if (code == "busy") {
    c = LLMC_ERR_BUSY;
  } else if (code == "limit_exceeded") {
    c = LLMC_ERR_QUOTA;
  } else if (code == "insufficient_storage") {
    c = LLMC_ERR_NO_SPACE;
  } else if (code == "unavailable") {
    c = LLMC_ERR_UNAVAILABLE;
  } else if (code == "cancelled") {
    c = LLMC_ERR_CANCELLED;
  }
  Failure f = failure(c, message.empty() ? "llmd reported an error (" + code + ")" : std::move(message));
  f.param = std::move(param);
  return f;
}

Failure from_connect_errno(int err, const std::string& socket_path) {
  if (err == ENOENT || err == ECONNREFUSED || err == ENOTDIR) {
    return failure(LLMC_ERR_UNAVAILABLE,
                   "llmd is not running: nothing is listening on " + socket_path +
                       (err == ECONNREFUSED ? " (connection refused)" : " (no such socket)") +
                       "; start it with 'systemctl start llmd' (or 'systemctl --user start llmd'), or point "
                       "LLMD_SOCKET at the socket of a running llmd");
  }
  if (err == EACCES || err == EPERM) {
    return failure(LLMC_ERR_PERMISSION, "no permission to connect to " + socket_path);
  }
  return from_errno(err, "connecting to " + socket_path);
}

Failure from_errno(int err, std::string_view what) {
  if (err == ENOMEM || err == ENOBUFS) return failure(LLMC_ERR_NOMEM, std::string(what) + ": out of memory");
  char buf[256];
  const char* text = ::strerror_r(err, buf, sizeof buf);  // the GNU variant: thread-safe
  return failure(LLMC_ERR_IO, std::string(what) + ": " + text);
}

}  // namespace llmc::detail

extern "C" const char* llmc_strerror(llmc_code code) {
  switch (code) {
    case LLMC_OK: return "success";
    case LLMC_ERR_INVALID_ARGUMENT: return "invalid argument";
    case LLMC_ERR_UNAVAILABLE: return "llmd unavailable";
    case LLMC_ERR_PERMISSION: return "permission denied";
    case LLMC_ERR_NOT_FOUND: return "not found";
    case LLMC_ERR_QUOTA: return "over a limit (quota)";
    case LLMC_ERR_BUSY: return "busy";
    case LLMC_ERR_CANCELLED: return "cancelled";
    case LLMC_ERR_TIMEOUT: return "timed out";
    case LLMC_ERR_IO: return "input/output error";
    case LLMC_ERR_PROTOCOL: return "protocol error";
    case LLMC_ERR_NOMEM: return "out of memory";
    case LLMC_ERR_SERVER: return "llmd failed";
    case LLMC_ERR_NO_SPACE: return "llmd's storage is full";
  }
  return "unknown error";
}
