// The one place where llmd Errors become HTTP statuses and OpenAI-shaped error bodies:
//   {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "...",
//              "limit": N, "actual": N}}
// from the Error's code, reason and details (common/result.h), never from its message: "code" is
// the code's name on the wire ("context_length_exceeded" for that Reason), "param" the offending
// field or the limit's config key (null if none), "limit" and "actual" only when the error has them.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "ipc/http_server.h"

namespace llmd::ipc {

struct HttpError {
  unsigned status = 500;
  nlohmann::json body;
  std::vector<Header> headers;  // Retry-After for 429/503
};

HttpError to_http_error(const Error& error);
HttpError http_error(unsigned status, const std::string& message, const std::string& code,
                     const std::string& param = {});

// JSON text for the wire. Bytes that are not UTF-8 (say, quoted from a client's bad input) become
// U+FFFD instead of making the serialiser throw.
std::string to_wire(const nlohmann::json& j);

void reply_error(Responder& r, const HttpError& e);
inline void reply_error(Responder& r, const Error& e) { reply_error(r, to_http_error(e)); }

}  // namespace llmd::ipc
