// Fuzz target: the D-Bus option dictionaries (ipc/dbus_values.h): read_vardict over an a{sv} as
// Generate receives it, then the shared generation options (turn_options.h) on the result; and
// VarDict (llmd's own a{sv} out) read back.
//
// sd-bus validates every message it receives, so the reader only ever sees well-formed messages:
// the input is a program that builds one through sd-bus's public API. A first byte picks the
// argument's shape (mostly a{sv}; sometimes another type, to reach the reader's refusal), then
// entries follow: a key (a known option name or bytes from the input), a variant type among those
// the reader takes (b y n q i u x t d s as) and those it refuses (arrays of numbers, nested
// variants, structs, dictionaries, object paths, byte arrays), and the value's bytes. The message
// lives on a bus object connected to nothing (a socketpair): sd-bus needs a bus to build a message,
// not a peer. Properties: every error is invalid_argument; an accepted dictionary is a JSON object
// of bool, number, string and string-array values, one per key; accepted generation options are
// valid; a VarDict reads back as the values it was given.
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/service.h"
#include "fuzz/fuzz_util.h"
#include "ipc/dbus_errors.h"
#include "ipc/dbus_values.h"
#include "ipc/json_fields.h"
#include "ipc/turn_options.h"

namespace {

using namespace llmd;

sd_bus* bus = nullptr;
std::uint64_t cookie = 0;

constexpr const char* kKeys[] = {"max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
                                 "repeat_penalty", "ignore_eos", "priority", "app", "raw", "", "stream"};

struct Message {
  sd_bus_message* m = nullptr;
  Message() {
    const int r = sd_bus_message_new_method_call(bus, &m, "org.llmd.LLM1", "/org/llmd/LLM1", "org.llmd.LLM1", "Generate");
    FUZZ_CHECK(r >= 0, "cannot create a message: " + std::to_string(r));
  }
  ~Message() { sd_bus_message_unref(m); }
  // Seals it and rewinds it for reading, as a received message is.
  bool seal() {
    return sd_bus_message_seal(m, ++cookie, 0) >= 0 && sd_bus_message_rewind(m, 1) >= 0;
  }
};

// Appends a variant of a type chosen by the input; false if sd-bus refused the value (invalid
// UTF-8 in a string, say), which leaves the message unusable.
bool append_variant(sd_bus_message* m, fuzz::ByteReader& in) {
  const std::uint8_t type = in.byte();
  switch (type % 18) {
    case 0: return sd_bus_message_append(m, "v", "b", static_cast<int>(in.byte() & 1)) >= 0;
    case 1: return sd_bus_message_append(m, "v", "y", in.take<std::uint8_t>()) >= 0;
    case 2: return sd_bus_message_append(m, "v", "n", in.take<std::int16_t>()) >= 0;
    case 3: return sd_bus_message_append(m, "v", "q", in.take<std::uint16_t>()) >= 0;
    case 4: return sd_bus_message_append(m, "v", "i", in.take<std::int32_t>()) >= 0;
    case 5: return sd_bus_message_append(m, "v", "u", in.take<std::uint32_t>()) >= 0;
    case 6: return sd_bus_message_append(m, "v", "x", in.take<std::int64_t>()) >= 0;
    case 7: return sd_bus_message_append(m, "v", "t", in.take<std::uint64_t>()) >= 0;
    case 8: return sd_bus_message_append(m, "v", "d", in.take<double>()) >= 0;
    case 9: {
      const std::string s = in.str();
      return sd_bus_message_append(m, "v", "s", s.c_str()) >= 0;
    }
    case 10: {
      const std::string a = in.str(16), b = in.str(16), c = in.str(16);
      const int n = in.byte() % 4;
      return sd_bus_message_append(m, "v", "as", n, a.c_str(), b.c_str(), c.c_str()) >= 0;
    }
    case 11: return sd_bus_message_append(m, "v", "ai", 2, in.take<std::int32_t>(), in.take<std::int32_t>()) >= 0;
    case 12: return sd_bus_message_append(m, "v", "v", "u", in.take<std::uint32_t>()) >= 0;
    case 13: {
      const std::string s = in.str(16);
      return sd_bus_message_append(m, "v", "(si)", s.c_str(), in.take<std::int32_t>()) >= 0;
    }
    case 14: {
      const std::string k = in.str(16);
      return sd_bus_message_append(m, "v", "a{sv}", 1, k.c_str(), "i", in.take<std::int32_t>()) >= 0;
    }
    case 15: return sd_bus_message_append(m, "v", "o", "/org/llmd/LLM1") >= 0;
    case 16: {
      const std::string s = in.str(16);
      return sd_bus_message_append(m, "v", "ay", s.size() > 2 ? 3 : 0, s.size() > 0 ? s[0] : 0, 1, 2) >= 0;
    }
    default: return sd_bus_message_append(m, "v", "g", "a{sv}") >= 0;
  }
}

// Builds the argument; false if sd-bus refused what the input asked for.
bool build(sd_bus_message* m, fuzz::ByteReader& in) {
  const std::uint8_t shape = in.byte();
  switch (shape % 8) {
    case 0: return true;  // no argument at all
    case 1: return sd_bus_message_append(m, "as", 1, "max_tokens") >= 0;
    case 2: return sd_bus_message_append(m, "a{ss}", 1, "max_tokens", "5") >= 0;
    case 3: return sd_bus_message_append(m, "u", 5u) >= 0;
    default: break;
  }
  if (sd_bus_message_open_container(m, 'a', "{sv}") < 0) return false;
  const int entries = in.byte() % 12;
  for (int i = 0; i < entries && !in.empty(); ++i) {
    const std::uint8_t k = in.byte();
    const std::string key = k < 0x80 ? kKeys[k % std::size(kKeys)] : in.str(32);
    if (sd_bus_message_open_container(m, 'e', "sv") < 0) return false;
    if (sd_bus_message_append_basic(m, 's', key.c_str()) < 0) return false;
    if (!append_variant(m, in)) return false;
    if (sd_bus_message_close_container(m) < 0) return false;
  }
  return sd_bus_message_close_container(m) >= 0;
}

void check_options(const nlohmann::json& options) {
  FUZZ_CHECK(options.is_object(), "read_vardict returned a non-object");
  for (const auto& [key, value] : options.items()) {
    const bool ok_value = value.is_boolean() || value.is_number() || value.is_string() ||
                          (value.is_array() && std::all_of(value.begin(), value.end(), [](const auto& v) { return v.is_string(); }));
    FUZZ_CHECK(ok_value, "option " + key + " became " + value.dump());
  }
  core::TurnRequest turn;
  const auto st = ipc::read_turn_options(options, core::ServiceLimits{}, 4096, turn);
  if (!st) {
    FUZZ_CHECK(st.error().code() == Errc::invalid_argument, "options refused with another code: " + st.error().to_string());
    return;
  }
  FUZZ_CHECK(engine::validate_generate(turn.params).ok(), "accepted options that validate_generate refuses");
  if (auto raw = ipc::opt_bool(options, "raw"); !raw) {
    FUZZ_CHECK(raw.error().code() == Errc::invalid_argument, "raw refused with another code");
  }
}

// VarDict out, read back in: the same keys and values (strings made D-Bus-safe by bus_text).
void check_vardict(fuzz::ByteReader& in) {
  ipc::VarDict d;
  nlohmann::json expected = nlohmann::json::object();
  bool duplicate = false;
  const int n = in.byte() % 6;
  for (int i = 0; i < n; ++i) {
    const std::string key = kKeys[in.byte() % (std::size(kKeys) - 2)];  // valid names only
    duplicate = duplicate || expected.contains(key);
    switch (in.byte() % 5) {
      case 0: {
        const bool b = in.byte() & 1;
        d.add(key, b);
        expected[key] = b;
        break;
      }
      case 1: {
        const auto u = in.take<std::uint32_t>();
        d.add(key, u);
        expected[key] = u;
        break;
      }
      case 2: {
        const auto x = in.take<std::int64_t>();
        d.add(key, x);
        expected[key] = x;
        break;
      }
      case 3: {
        const auto v = in.take<double>();
        d.add(key, v);
        expected[key] = v;
        break;
      }
      default: {
        const std::string s = in.str();
        d.add(key, s);
        expected[key] = ipc::bus_text(s);
      }
    }
  }
  Message msg;
  FUZZ_CHECK(d.append_to(msg.m) >= 0, "VarDict could not be appended");
  FUZZ_CHECK(msg.seal(), "cannot seal a message");
  const auto back = ipc::read_vardict(msg.m);
  if (duplicate) {
    FUZZ_CHECK(!back, "a dictionary with a key given twice was accepted");
    return;
  }
  FUZZ_CHECK(back, "a VarDict does not read back: " + back.error().to_string());
  for (const auto& [key, value] : expected.items()) {
    const auto& got = (*back)[key];
    const bool same = value.is_number_float() && std::isnan(value.get<double>())
                          ? got.is_number_float() && std::isnan(got.get<double>())
                          : got == value;
    FUZZ_CHECK(same, "VarDict " + key + " read back as " + got.dump() + ", not " + value.dump());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair failed");
  FUZZ_CHECK(sd_bus_new(&bus) >= 0 && sd_bus_set_fd(bus, sv[0], sv[0]) >= 0 && sd_bus_start(bus) >= 0,
             "cannot set up an unconnected sd-bus object");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::ByteReader in(data, size);
  {
    Message msg;
    if (build(msg.m, in) && msg.seal()) {
      const auto options = ipc::read_vardict(msg.m);
      if (options) {
        check_options(*options);
      } else {
        FUZZ_CHECK(options.error().code() == Errc::invalid_argument,
                   "read_vardict failed with another code: " + options.error().to_string());
      }
    }
  }
  check_vardict(in);
  return 0;
}
