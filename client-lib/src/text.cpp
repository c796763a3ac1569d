// String checks (see text.h).
#include "client-lib/src/text.h"

#include <cstdint>
#include <cstring>

namespace llmc::detail {

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // No overlong forms, no surrogates, nothing past U+10FFFF.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

Failure check_text(const char* s, const char* what, std::string_view& out, bool optional, std::size_t max_bytes) {
  out = {};
  if (s == nullptr) {
    if (optional) return {};
    return failure(LLMC_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
  }
  // strnlen: a string without its NUL (or absurdly long) is refused without reading past the limit.
  const std::size_t len = ::strnlen(s, max_bytes + 1);
  if (len > max_bytes) {
    return failure(LLMC_ERR_INVALID_ARGUMENT,
                   std::string(what) + " is longer than " + std::to_string(max_bytes) + " bytes");
  }
  out = std::string_view(s, len);
  if (!valid_utf8(out)) return failure(LLMC_ERR_INVALID_ARGUMENT, std::string(what) + " is not valid UTF-8");
  return {};
}

std::string path_segment(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace llmc::detail
