// Between D-Bus values and llmd's: a{sv} option dictionaries in (as a JSON object, so the
// front ends share one set of field checks: turn_options.h) and a{sv} dictionaries out.
#pragma once

#include <systemd/sd-bus.h>

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace llmd::ipc {

// Reads an a{sv} at the message's read position into a JSON object: b -> bool; y n q i u x t ->
// integer; d -> number; s -> string; as -> array of strings. invalid_argument naming the key
// for any other type, for a key given twice, or for a malformed dictionary.
Result<nlohmann::json> read_vardict(sd_bus_message* m);

// An a{sv} to send: each value's D-Bus type is its C++ type's (b, u, x, d, s).
class VarDict {
 public:
  using Value = std::variant<bool, std::uint32_t, std::int64_t, double, std::string>;
  VarDict& add(std::string key, Value value) {
    entries_.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  // Appends it to a message being built. A negative errno on failure.
  int append_to(sd_bus_message* m) const;

 private:
  std::vector<std::pair<std::string, Value>> entries_;
};

}  // namespace llmd::ipc
