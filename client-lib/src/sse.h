// Server-Sent Events: splits a byte stream into the data of its events ("data: ...\n\n").
// Pure code; the client feeds it whatever arrives.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llmd::client {

class SseParser {
 public:
  // Appends bytes; returns the data of every event completed by them (multi-line data joined with
  // '\n', comment lines and other fields ignored).
  std::vector<std::string> push(std::string_view bytes);

 private:
  std::string buffer_;
  std::string data_;
  bool has_data_ = false;
};

}  // namespace llmd::client
