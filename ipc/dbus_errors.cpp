// Error mapping for D-Bus (see dbus_errors.h).
#include "ipc/dbus_errors.h"

#include "common/utf8.h"

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

namespace {

// sd-bus refuses the Unicode noncharacters in strings (U+FDD0..U+FDEF and every U+xFFFE, U+xFFFF)
// although they are valid UTF-8. `s` is valid UTF-8; returns the byte length of the noncharacter
// starting at s[i], or 0.
std::size_t noncharacter_at(const std::string& s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  char32_t cp = 0;
  std::size_t len = 0;
  if (b(0) >= 0xF0) {
    cp = (char32_t(b(0) & 0x07) << 18) | (char32_t(b(1) & 0x3F) << 12) | (char32_t(b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    len = 4;
  } else if (b(0) >= 0xE0) {
    cp = (char32_t(b(0) & 0x0F) << 12) | (char32_t(b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    len = 3;
  } else {
    return 0;
  }
  return (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE ? len : 0;
}

}  // namespace

std::string bus_text(std::string text) {
  std::string out = std::move(text);
  if (out.find('\0') != std::string::npos || !engine::is_valid_utf8(out)) {
    engine::Utf8Assembler utf8;
    std::string valid = utf8.push(out);
    valid += utf8.finish();
    out = std::move(valid);
  }
  std::string clean;
  clean.reserve(out.size());
  for (std::size_t i = 0; i < out.size();) {
    const std::size_t bad = noncharacter_at(out, i);
    if (out[i] == '\0' || bad > 0) {
      clean += "\xEF\xBF\xBD";
      i += bad > 0 ? bad : 1;
    } else {
      clean += out[i++];
    }
  }
  return clean;
}

}  // namespace llmd::ipc
