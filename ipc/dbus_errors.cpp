// Error mapping for D-Bus (see dbus_errors.h).
#include "ipc/dbus_errors.h"

#include "daemon/engine/utf8.h"

namespace llmd::ipc {

BusError to_bus_error(const Error& error) {
  const char* name = kBusErrorFailed;
  switch (error.code()) {
    case Errc::invalid_argument:
    case Errc::unsupported: name = kBusErrorInvalidArgument; break;
    case Errc::not_found: name = kBusErrorNotFound; break;
    case Errc::permission_denied: name = kBusErrorPermissionDenied; break;
    case Errc::resource_exhausted: name = kBusErrorQuotaExceeded; break;
    case Errc::no_space: name = kBusErrorNoSpace; break;
    case Errc::busy: name = kBusErrorBusy; break;
    case Errc::unavailable: name = kBusErrorUnavailable; break;
    case Errc::cancelled: name = kBusErrorCancelled; break;
    case Errc::corrupt:
    case Errc::io_error:
    case Errc::internal: name = kBusErrorFailed; break;
  }
  return {name, bus_text(error.message())};
}

int reply_bus_error(sd_bus_message* call, const Error& error) {
  const BusError e = to_bus_error(error);
  sd_bus_error be = SD_BUS_ERROR_NULL;
  (void)sd_bus_error_set(&be, e.name.c_str(), e.message.c_str());  // returns the errno it maps to
  const int r = sd_bus_reply_method_error(call, &be);
  sd_bus_error_free(&be);
  return r;
}

std::string bus_text(std::string text) {
  if (text.find('\0') == std::string::npos && engine::is_valid_utf8(text)) return text;
  engine::Utf8Assembler utf8;
  std::string out = utf8.push(text);
  out += utf8.finish();
  std::string clean;
  clean.reserve(out.size());
  for (const char ch : out) {
    if (ch == '\0') {
      clean += "\xEF\xBF\xBD";
    } else {
      clean += ch;
    }
  }
  return clean;
}

}  // namespace llmd::ipc
