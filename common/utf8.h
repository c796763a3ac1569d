// Streaming-safe UTF-8 assembly for token-by-token output. A token's bytes may end in the middle
// of a multi-byte character (byte-fallback and byte-level BPE vocabularies split them freely); the
// assembler holds such a tail back until the character is complete, so every character is emitted
// once and whole. Bytes that can never form a valid character become U+FFFD (one per maximal
// invalid subpart, as the WHATWG decoder does), so the output is always valid UTF-8.
#pragma once

#include <string>
#include <string_view>

namespace llmd::engine {

class Utf8Assembler {
 public:
  // Appends bytes; returns the text that is now complete (possibly empty).
  std::string push(std::string_view bytes);
  // Ends the stream: returns any held-back incomplete tail as U+FFFD (empty if none).
  std::string finish();
  // Bytes currently held back (0..3).
  size_t pending() const { return pending_.size(); }

 private:
  std::string pending_;
};

// True if s is entirely valid UTF-8.
bool is_valid_utf8(std::string_view s);

}  // namespace llmd::engine
