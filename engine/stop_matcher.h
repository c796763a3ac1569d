// Stop strings for streamed text: output is released only once it cannot be the start of a stop
// string, so a stop string split across tokens is never shown, and the text before it is.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace llmd::engine {

inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;

// invalid_argument if there are too many stop strings, one is empty or too long, or not UTF-8.
Status validate_stop_strings(const std::vector<std::string>& stops);

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  struct Output {
    std::string text;      // text that may be shown now
    bool stopped = false;  // a stop string was found; text ends right before it
  };

  // Appends complete text; after a stop, further input is ignored.
  Output push(std::string_view text);
  // End of generation without a stop: releases what was held back.
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace llmd::engine
