// How a call or a request failed: the C ABI's code, a message, and what llmd said about it. The one
// mapping of HTTP statuses, llmd's error codes and errno values to llmc_code lives in failure.cpp.
#pragma once

#include <string>
#include <string_view>

#include "llmclient/llmclient.h"

namespace llmc::detail {

struct Failure {
  llmc_code code = LLMC_OK;
  std::string message;
  int http_status = 0;      // 0: llmd did not answer
  std::string param;        // llmd's error.param
  long retry_after_s = -1;  // llmd's Retry-After

  explicit operator bool() const { return code != LLMC_OK; }  // true: a failure
};

inline Failure failure(llmc_code code, std::string message) { return Failure{code, std::move(message), 0, {}, -1}; }

// An error answer of llmd (HTTP status + its OpenAI-shaped JSON body).
Failure from_http(int status, std::string_view body, long retry_after_s);

// An "error" object inside an event stream (no HTTP status: its "code" says what it is).
Failure from_error_event(const std::string& code, std::string message, std::string param);

// connect() to llmd's socket failed with errno `err`.
Failure from_connect_errno(int err, const std::string& socket_path);

// Another system call failed.
Failure from_errno(int err, std::string_view what);

}  // namespace llmc::detail
