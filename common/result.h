// Error values shared by every llmd module: an error code, a human-readable message and the
// structured details a program acts on (ErrorDetail), and Result<T>, a value-or-error in the shape
// of std::expected. Core modules return these instead of throwing; each boundary (HTTP, D-Bus, C
// ABI) translates them once, from the code and the details, never by reading the message. See
// STYLE.md, "Errors".
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace llmd {

enum class Errc {
  invalid_argument,    // the caller's input is wrong (bad value, bad file contents it supplied)
  not_found,           // a named thing does not exist
  permission_denied,   // the caller may not do this
  unsupported,         // well-formed, but something llmd (or llama.cpp) cannot handle
  corrupt,             // stored or supplied data fails its own consistency checks
  resource_exhausted,  // a limit or capacity was reached (KV cells, memory, quota)
  no_space,            // the storage is full: ENOSPC, EDQUOT, SQLITE_FULL, or the disk reserve reached
  busy,                // the resource is in use by another operation (try again later)
  unavailable,         // the service cannot take work now (starting or shutting down)
  io_error,            // the operating system refused an operation
  cancelled,           // the operation was stopped on request
  internal,            // a bug or an unexpected failure of a dependency
};

std::string_view errc_name(Errc code);

// A finer reason than the code, for the few errors a client's program tells apart by name (the
// boundaries give it its own wire name; the code still decides the HTTP status and D-Bus error).
enum class Reason : std::uint8_t {
  none,
  context_length_exceeded,  // invalid_argument: the prompt (with the session's history) does not
                            // fit a sequence of the context (core/chat_turns.h, check_context)
};

// What a program (not only a person) can act on, set where the error is born. Every field is
// optional; the message stays the text for people and is never parsed back into these.
struct ErrorDetail {
  Reason reason = Reason::none;
  // The offending request field ("max_tokens", "app", "messages") or, for a limit reached, its
  // config key ("max-in-flight", "disk-reserve-mib").
  std::string param;
  std::optional<std::uint64_t> limit;   // the limit, in its key's unit (tokens, count, MiB)
  std::optional<std::uint64_t> actual;  // what the request had or would have reached, same unit
};

class Error {
 public:
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}
  Error(Errc code, std::string message, ErrorDetail detail)
      : code_(code), message_(std::move(message)), detail_(std::move(detail)) {}

  Errc code() const { return code_; }
  const std::string& message() const { return message_; }
  const ErrorDetail& detail() const { return detail_; }
  Reason reason() const { return detail_.reason; }
  const std::string& param() const { return detail_.param; }
  // "code: message", for logs and test failure output.
  std::string to_string() const;

  // Adds context in front of the message: "loading model: file is empty". The details stay.
  Error with_context(std::string_view context) const;

  // The details, set where the error is born:
  //   Error(Errc::invalid_argument, "max_tokens must be ...").with_param("max_tokens")
  //   Error(Errc::resource_exhausted, "...").with_limit("max-in-flight", 256, 256)
  Error with_param(std::string param) &&;
  Error with_limit(std::string param, std::uint64_t limit, std::optional<std::uint64_t> actual = std::nullopt) &&;
  Error with_reason(Reason reason) &&;

 private:
  Errc code_;
  std::string message_;
  ErrorDetail detail_;
};

// Maps an errno value to an Error; the one place where errno is interpreted.
Error errno_error(int err, std::string_view what);

template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  template <typename U = T,
            typename = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                        !std::is_same_v<std::decay_t<U>, Error> &&
                                        !std::is_same_v<std::decay_t<U>, Result>>>
  Result(U&& value) : v_(std::in_place_index<0>, std::forward<U>(value)) {}  // NOLINT(implicit)
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}      // NOLINT(implicit)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(implicit)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return error_; }

 private:
  Error error_{Errc::internal, {}};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status ok_status() { return {}; }

}  // namespace llmd

// Propagates an error from an expression returning Result<T>/Status; yields nothing.
#define LLMD_TRY_STATUS(expr)                   \
  do {                                          \
    auto llmd_try_status_ = (expr);             \
    if (!llmd_try_status_.ok()) {               \
      return llmd_try_status_.error();          \
    }                                           \
  } while (0)
