// Streaming UTF-8 assembly (see utf8.h).
#include "common/utf8.h"

#include <cstdint>

namespace llmd::engine {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Length of the sequence a lead byte starts, 0 if it cannot start one.
int sequence_length(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Valid range of the second byte after a lead byte (the later bytes are always 80..BF).
void second_byte_range(uint8_t lead, uint8_t& lo, uint8_t& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (lead == 0xE0) lo = 0xA0;
  else if (lead == 0xED) hi = 0x9F;
  else if (lead == 0xF0) lo = 0x90;
  else if (lead == 0xF4) hi = 0x8F;
}

enum class Scan { complete, incomplete, invalid };

// Examines the sequence starting at s[i]; on complete sets len to its length, on invalid sets
// len to the length of the maximal invalid subpart (>= 1), on incomplete the tail is valid so far.
Scan scan(std::string_view s, size_t i, size_t& len) {
  const auto lead = static_cast<uint8_t>(s[i]);
  const int need = sequence_length(lead);
  if (need == 0) {
    len = 1;
    return Scan::invalid;
  }
  if (need == 1) {
    len = 1;
    return Scan::complete;
  }
  uint8_t lo = 0, hi = 0;
  second_byte_range(lead, lo, hi);
  for (int k = 1; k < need; ++k) {
    if (i + k >= s.size()) return Scan::incomplete;
    const auto b = static_cast<uint8_t>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      len = static_cast<size_t>(k);
      return Scan::invalid;
    }
  }
  len = static_cast<size_t>(need);
  return Scan::complete;
}

}  // namespace

std::string Utf8Assembler::push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  out.reserve(pending_.size());
  size_t i = 0;
  while (i < pending_.size()) {
    size_t len = 0;
    const Scan r = scan(pending_, i, len);
    if (r == Scan::incomplete) break;
    if (r == Scan::complete) {
      out.append(pending_, i, len);
    } else {
      out.append(kReplacement);
    }
    i += len;
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Assembler::finish() {
  if (pending_.empty()) return {};
  pending_.clear();
  return std::string(kReplacement);
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 0;
    if (scan(s, i, len) != Scan::complete) return false;
    i += len;
  }
  return true;
}

}  // namespace llmd::engine
