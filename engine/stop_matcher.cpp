// Stop-string matching over streamed text (see stop_matcher.h).
#include "engine/stop_matcher.h"

#include <algorithm>

#include "common/utf8.h"

namespace llmd::engine {

Status validate_stop_strings(const std::vector<std::string>& stops) {
  if (stops.size() > kMaxStopStrings) {
    return Error(Errc::invalid_argument, "at most " + std::to_string(kMaxStopStrings) + " stop strings are allowed");
  }
  for (const auto& s : stops) {
    if (s.empty()) return Error(Errc::invalid_argument, "a stop string must not be empty");
    if (s.size() > kMaxStopStringBytes) {
      return Error(Errc::invalid_argument,
                   "a stop string must be at most " + std::to_string(kMaxStopStringBytes) + " bytes");
    }
    if (!is_valid_utf8(s)) return Error(Errc::invalid_argument, "a stop string is not valid UTF-8");
  }
  return {};
}

StopMatcher::Output StopMatcher::push(std::string_view text) {
  Output out;
  if (stopped_) {
    out.stopped = true;
    return out;
  }
  held_.append(text);
  if (stops_.empty()) {
    out.text = std::move(held_);
    held_.clear();
    return out;
  }
  // Earliest complete stop string wins.
  size_t first = std::string::npos;
  for (const auto& s : stops_) {
    const size_t p = held_.find(s);
    if (p < first) first = p;
  }
  if (first != std::string::npos) {
    out.text = held_.substr(0, first);
    out.stopped = stopped_ = true;
    held_.clear();
    return out;
  }
  // Keep the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    const size_t max_len = std::min(s.size() - 1, held_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  out.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::finish() {
  if (stopped_) return {};
  std::string s = std::move(held_);
  held_.clear();
  return s;
}

}  // namespace llmd::engine
