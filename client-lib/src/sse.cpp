// SSE event splitting (see sse.h).
#include "client-lib/src/sse.h"

namespace llmd::client {

std::vector<std::string> SseParser::push(std::string_view bytes) {
  buffer_.append(bytes);
  std::vector<std::string> events;
  std::size_t start = 0;
  while (true) {
    const std::size_t nl = buffer_.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view line(buffer_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    start = nl + 1;
    if (line.empty()) {  // end of an event
      if (has_data_) events.push_back(std::move(data_));
      data_.clear();
      has_data_ = false;
    } else if (line.rfind("data:", 0) == 0) {
      std::string_view v = line.substr(5);
      if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      if (has_data_) data_ += '\n';
      data_ += v;
      has_data_ = true;
    }
  }
  buffer_.erase(0, start);
  return events;
}

}  // namespace llmd::client
