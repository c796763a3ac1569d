// Checks of the strings callers hand to the library, and their encoding into a request path.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "client-lib/src/failure.h"

namespace llmc::detail {

// The largest text the library sends (llmd's own request limit is at most 256 MiB).
constexpr std::size_t kMaxTextBytes = 256u << 20;

bool valid_utf8(std::string_view s);

// Checks a caller's string: not NULL (unless `optional`), at most `max_bytes`, valid UTF-8. `what`
// names it in the message. On success `out` views it (empty for an optional NULL).
Failure check_text(const char* s, const char* what, std::string_view& out, bool optional = false,
                   std::size_t max_bytes = kMaxTextBytes);

// A path segment: bytes other than A-Z a-z 0-9 - . _ ~ percent-encoded.
std::string path_segment(std::string_view s);

}  // namespace llmc::detail
