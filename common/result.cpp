// Error naming and errno mapping for common/result.h.
#include "common/result.h"

#include <cerrno>
#include <cstring>

namespace llmd {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::permission_denied: return "permission_denied";
    case Errc::unsupported: return "unsupported";
    case Errc::corrupt: return "corrupt";
    case Errc::resource_exhausted: return "resource_exhausted";
    case Errc::no_space: return "no_space";
    case Errc::busy: return "busy";
    case Errc::unavailable: return "unavailable";
    case Errc::io_error: return "io_error";
    case Errc::cancelled: return "cancelled";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string s(errc_name(code_));
  s += ": ";
  s += message_;
  return s;
}

Error Error::with_context(std::string_view context) const {
  std::string m(context);
  m += ": ";
  m += message_;
  return Error(code_, std::move(m), detail_);
}

Error Error::with_param(std::string param) && {
  detail_.param = std::move(param);
  return std::move(*this);
}

Error Error::with_limit(std::string param, std::uint64_t limit, std::optional<std::uint64_t> actual) && {
  detail_.param = std::move(param);
  detail_.limit = limit;
  detail_.actual = actual;
  return std::move(*this);
}

Error Error::with_reason(Reason reason) && {
  detail_.reason = reason;
  return std::move(*this);
}

Error errno_error(int err, std::string_view what) {
  Errc code = Errc::io_error;
  switch (err) {
    case ENOENT: case ENOTDIR: code = Errc::not_found; break;
    case EACCES: case EPERM: case EROFS: code = Errc::permission_denied; break;
    case ENOSPC: case EDQUOT: code = Errc::no_space; break;
    case ENOMEM: case EMFILE: case ENFILE: code = Errc::resource_exhausted; break;
    case EBUSY: case EAGAIN: code = Errc::busy; break;
    case EINVAL: case EISDIR: case ENAMETOOLONG: case ELOOP: code = Errc::invalid_argument; break;
    default: break;
  }
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  return Error(code, std::move(m));
}

}  // namespace llmd
