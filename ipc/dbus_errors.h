// The one place where llmd Errors become D-Bus errors. Names, and the Errc each comes from:
//
//   org.llmd.LLM1.Error.InvalidArgument   invalid_argument, unsupported
//   org.llmd.LLM1.Error.NotFound          not_found (also another uid's session or request)
//   org.llmd.LLM1.Error.PermissionDenied  permission_denied (and a caller whose credentials the
//                                         bus cannot tell)
//   org.llmd.LLM1.Error.QuotaExceeded     resource_exhausted; per-uid limits end their message
//                                         with "(limit KEY = VALUE)", KEY the config key
//   org.llmd.LLM1.Error.NoSpace           no_space (the state directory's file system is full, or
//                                         below disk-reserve-mib)
//   org.llmd.LLM1.Error.Busy              busy (the session has a turn running)
//   org.llmd.LLM1.Error.Unavailable       unavailable (llmd is stopping)
//   org.llmd.LLM1.Error.Cancelled         cancelled (Cancel, the caller left, shutdown)
//   org.llmd.LLM1.Error.Failed            corrupt, io_error, internal
//
// The message is llmd's own, made safe for a D-Bus string (see bus_text).
#pragma once

#include <systemd/sd-bus.h>

#include <exception>
#include <string>

#include "common/result.h"

namespace llmd::ipc {

inline constexpr const char* kBusErrorInvalidArgument = "org.llmd.LLM1.Error.InvalidArgument";
inline constexpr const char* kBusErrorNotFound = "org.llmd.LLM1.Error.NotFound";
inline constexpr const char* kBusErrorPermissionDenied = "org.llmd.LLM1.Error.PermissionDenied";
inline constexpr const char* kBusErrorQuotaExceeded = "org.llmd.LLM1.Error.QuotaExceeded";
inline constexpr const char* kBusErrorNoSpace = "org.llmd.LLM1.Error.NoSpace";
inline constexpr const char* kBusErrorBusy = "org.llmd.LLM1.Error.Busy";
inline constexpr const char* kBusErrorUnavailable = "org.llmd.LLM1.Error.Unavailable";
inline constexpr const char* kBusErrorCancelled = "org.llmd.LLM1.Error.Cancelled";
inline constexpr const char* kBusErrorFailed = "org.llmd.LLM1.Error.Failed";

struct BusError {
  std::string name;
  std::string message;
};

BusError to_bus_error(const Error& error);

// Answers the method call `call` with the error. A negative errno if it could not be queued.
int reply_bus_error(sd_bus_message* call, const Error& error);

// Runs a method handler's body (returning what sd-bus expects of a handler); an exception becomes
// the call's Failed error instead of crossing into C.
template <typename F>
int guarded(sd_bus_message* call, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    reply_bus_error(call, Error(Errc::internal, std::string("internal error: ") + e.what()));
  } catch (...) {
    reply_bus_error(call, Error(Errc::internal, "internal error"));
  }
  return 1;
}

// Text as a D-Bus string may carry it: valid UTF-8 without NUL bytes and without Unicode
// noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF); NUL, invalid bytes and noncharacters become
// U+FFFD. sd-bus refuses a message with anything else.
std::string bus_text(std::string text);

}  // namespace llmd::ipc
