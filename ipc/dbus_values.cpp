// D-Bus values (see dbus_values.h).
#include "ipc/dbus_values.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "ipc/dbus_errors.h"

namespace llmd::ipc {
namespace {

Error malformed(int r) {
  return Error(Errc::invalid_argument, std::string("the options are not a valid a{sv}: ") + std::strerror(-r));
}

template <typename T>
int read_number(sd_bus_message* m, char type, nlohmann::json& out) {
  T v{};
  const int r = sd_bus_message_read_basic(m, type, &v);
  if (r < 0) return r;
  out = v;
  return 1;
}

// Reads the variant's value (signature `sig`) into out; 0 if `sig` is not a type options take.
int read_value(sd_bus_message* m, const std::string& sig, nlohmann::json& out) {
  if (sig.size() == 1) {
    switch (sig[0]) {
      case 'b': {
        int v = 0;
        const int r = sd_bus_message_read_basic(m, 'b', &v);
        if (r >= 0) out = v != 0;
        return r < 0 ? r : 1;
      }
      case 'y': return read_number<std::uint8_t>(m, 'y', out);
      case 'n': return read_number<std::int16_t>(m, 'n', out);
      case 'q': return read_number<std::uint16_t>(m, 'q', out);
      case 'i': return read_number<std::int32_t>(m, 'i', out);
      case 'u': return read_number<std::uint32_t>(m, 'u', out);
      case 'x': return read_number<std::int64_t>(m, 'x', out);
      case 't': return read_number<std::uint64_t>(m, 't', out);
      case 'd': return read_number<double>(m, 'd', out);
      case 's': {
        const char* s = nullptr;
        const int r = sd_bus_message_read_basic(m, 's', &s);
        if (r >= 0) out = std::string(s);
        return r < 0 ? r : 1;
      }
      default: break;
    }
  } else if (sig == "as") {
    char** strv = nullptr;
    const int r = sd_bus_message_read_strv(m, &strv);
    if (r < 0) return r;
    out = nlohmann::json::array();
    for (char** s = strv; s != nullptr && *s != nullptr; ++s) {
      out.push_back(std::string(*s));
      std::free(*s);
    }
    std::free(strv);
    return 1;
  }
  const int r = sd_bus_message_skip(m, sig.c_str());
  return r < 0 ? r : 0;
}

}  // namespace

Result<nlohmann::json> read_vardict(sd_bus_message* m) {
  nlohmann::json out = nlohmann::json::object();
  int r = sd_bus_message_enter_container(m, 'a', "{sv}");
  if (r <= 0) return malformed(r == 0 ? -EINVAL : r);
  while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
    const char* key = nullptr;
    if ((r = sd_bus_message_read_basic(m, 's', &key)) < 0) return malformed(r);
    const std::string name = key;
    const char* contents = nullptr;
    if ((r = sd_bus_message_peek_type(m, nullptr, &contents)) < 0) return malformed(r);
    if (contents == nullptr) return malformed(-EINVAL);
    const std::string sig = contents;
    if ((r = sd_bus_message_enter_container(m, 'v', sig.c_str())) < 0) return malformed(r);
    nlohmann::json value;
    if ((r = read_value(m, sig, value)) < 0) return malformed(r);
    if (r == 0) {
      return Error(Errc::invalid_argument,
                   "option " + bus_text(name) + " has D-Bus type " + sig + "; options are b, integers, d, s or as");
    }
    if ((r = sd_bus_message_exit_container(m)) < 0) return malformed(r);  // v
    if ((r = sd_bus_message_exit_container(m)) < 0) return malformed(r);  // e
    if (out.contains(name)) return Error(Errc::invalid_argument, "option " + bus_text(name) + " is given twice");
    out[name] = std::move(value);
  }
  if (r < 0) return malformed(r);
  if ((r = sd_bus_message_exit_container(m)) < 0) return malformed(r);
  return out;
}

int VarDict::append_to(sd_bus_message* m) const {
  int r = sd_bus_message_open_container(m, 'a', "{sv}");
  for (const auto& [key, value] : entries_) {
    if (r < 0) return r;
    r = sd_bus_message_open_container(m, 'e', "sv");
    if (r >= 0) r = sd_bus_message_append_basic(m, 's', key.c_str());
    if (r < 0) return r;
    r = std::visit(
        [m](const auto& v) -> int {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool>) {
            return sd_bus_message_append(m, "v", "b", static_cast<int>(v));
          } else if constexpr (std::is_same_v<T, std::uint32_t>) {
            return sd_bus_message_append(m, "v", "u", v);
          } else if constexpr (std::is_same_v<T, std::int64_t>) {
            return sd_bus_message_append(m, "v", "x", v);
          } else if constexpr (std::is_same_v<T, double>) {
            return sd_bus_message_append(m, "v", "d", v);
          } else {
            const std::string text = bus_text(v);
            return sd_bus_message_append(m, "v", "s", text.c_str());
          }
        },
        value);
    if (r >= 0) r = sd_bus_message_close_container(m);
  }
  if (r < 0) return r;
  return sd_bus_message_close_container(m);
}

}  // namespace llmd::ipc
