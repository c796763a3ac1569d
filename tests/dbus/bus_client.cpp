// The tests' D-Bus client (see bus_client.h).
#include "tests/dbus/bus_client.h"

#include <cstdarg>
#include <thread>

#include <gtest/gtest.h>

namespace llmd::test {
namespace {

Reply callv(sd_bus* bus, const char* destination, const char* method, const char* types, va_list ap) {
  Reply out;
  sd_bus_error error = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  const int r = sd_bus_call_methodv(bus, destination, kPath, kInterface, method, &error, &reply, types, ap);
  if (r < 0) {
    out.error_name = error.name != nullptr ? error.name : "errno";
    out.error_message = error.message != nullptr ? error.message : std::to_string(-r);
  } else {
    out.msg = reply;
  }
  sd_bus_error_free(&error);
  return out;
}

// Appends one option value: plain JSON by its type, or {"sig": SIG, "value": V} for an exact
// D-Bus type (to test what the daemon accepts).
int append_value(sd_bus_message* m, const nlohmann::json& v) {
  std::string sig;
  nlohmann::json value = v;
  if (v.is_object()) {
    sig = v.at("sig").get<std::string>();
    value = v.at("value");
  } else if (v.is_boolean()) {
    sig = "b";
  } else if (v.is_number_unsigned()) {
    sig = "t";
  } else if (v.is_number_integer()) {
    sig = "x";
  } else if (v.is_number()) {
    sig = "d";
  } else if (v.is_string()) {
    sig = "s";
  } else {
    sig = "as";
  }
  int r = sd_bus_message_open_container(m, 'v', sig.c_str());
  if (r < 0) return r;
  if (sig == "b") r = sd_bus_message_append(m, "b", static_cast<int>(value.get<bool>()));
  else if (sig == "y") r = sd_bus_message_append(m, "y", value.get<std::uint8_t>());
  else if (sig == "n") r = sd_bus_message_append(m, "n", value.get<std::int16_t>());
  else if (sig == "q") r = sd_bus_message_append(m, "q", value.get<std::uint16_t>());
  else if (sig == "i") r = sd_bus_message_append(m, "i", value.get<std::int32_t>());
  else if (sig == "u") r = sd_bus_message_append(m, "u", value.get<std::uint32_t>());
  else if (sig == "x") r = sd_bus_message_append(m, "x", value.get<std::int64_t>());
  else if (sig == "t") r = sd_bus_message_append(m, "t", value.get<std::uint64_t>());
  else if (sig == "d") r = sd_bus_message_append(m, "d", value.get<double>());
  else if (sig == "s") r = sd_bus_message_append(m, "s", value.get<std::string>().c_str());
  else if (sig == "as" || sig == "ai") {
    r = sd_bus_message_open_container(m, 'a', sig.c_str() + 1);
    for (const auto& e : value) {
      if (r < 0) break;
      r = sig == "as" ? sd_bus_message_append(m, "s", e.get<std::string>().c_str())
                      : sd_bus_message_append(m, "i", e.get<std::int32_t>());
    }
    if (r >= 0) r = sd_bus_message_close_container(m);
  } else {
    ADD_FAILURE() << "the test client cannot send D-Bus type " << sig;
    return -EINVAL;
  }
  if (r < 0) return r;
  return sd_bus_message_close_container(m);
}

}  // namespace

Reply::Reply(Reply&& o) noexcept
    : msg(o.msg), error_name(std::move(o.error_name)), error_message(std::move(o.error_message)) {
  o.msg = nullptr;
}

Reply& Reply::operator=(Reply&& o) noexcept {
  std::swap(msg, o.msg);
  error_name = std::move(o.error_name);
  error_message = std::move(o.error_message);
  return *this;
}

Reply::~Reply() {
  if (msg != nullptr) sd_bus_message_unref(msg);
}

std::string Reply::str() const {
  if (!ok() || sd_bus_message_rewind(msg, 1) < 0) return {};
  const char* s = nullptr;
  char type = 0;
  if (sd_bus_message_peek_type(msg, &type, nullptr) <= 0 || (type != 's' && type != 'o')) return {};
  if (sd_bus_message_read_basic(msg, type, &s) < 0) return {};
  return s;
}

nlohmann::json read_dict(sd_bus_message* m) {
  nlohmann::json out = nlohmann::json::object();
  if (sd_bus_message_enter_container(m, 'a', "{sv}") <= 0) return out;
  while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
    const char* key = nullptr;
    const char* contents = nullptr;
    sd_bus_message_read_basic(m, 's', &key);
    sd_bus_message_peek_type(m, nullptr, &contents);
    const std::string sig = contents != nullptr ? contents : "";
    sd_bus_message_enter_container(m, 'v', sig.c_str());
    nlohmann::json v;
    if (sig == "b") {
      int b = 0;
      sd_bus_message_read_basic(m, 'b', &b);
      v = b != 0;
    } else if (sig == "u") {
      std::uint32_t u = 0;
      sd_bus_message_read_basic(m, 'u', &u);
      v = u;
    } else if (sig == "x") {
      std::int64_t x = 0;
      sd_bus_message_read_basic(m, 'x', &x);
      v = x;
    } else if (sig == "d") {
      double d = 0;
      sd_bus_message_read_basic(m, 'd', &d);
      v = d;
    } else if (sig == "s") {
      const char* s = nullptr;
      sd_bus_message_read_basic(m, 's', &s);
      v = std::string(s);
    } else {
      sd_bus_message_skip(m, sig.c_str());
      v = "(" + sig + ")";
    }
    out[key] = {{"sig", sig}, {"value", v}};
    sd_bus_message_exit_container(m);
    sd_bus_message_exit_container(m);
  }
  sd_bus_message_exit_container(m);
  return out;
}

BusClient::BusClient(const std::string& address) {
  sd_bus* b = nullptr;
  int r = sd_bus_new(&b);
  if (r >= 0) r = sd_bus_set_address(b, address.c_str());
  if (r >= 0) r = sd_bus_set_bus_client(b, 1);
  if (r >= 0) r = sd_bus_start(b);
  if (r < 0) {
    ADD_FAILURE() << "cannot connect to " << address << ": " << std::strerror(-r);
    if (b != nullptr) sd_bus_unref(b);
    return;
  }
  bus_ = b;
  // Request signals, whatever their path: unicast ones arrive without a match on the bus side;
  // this local match hands them to us (and makes the bus deliver broadcast ones, if any were sent).
  sd_bus_match_signal(bus_, &signals_slot_, nullptr, nullptr, kRequestInterface, nullptr, on_request_signal, this);
  sd_bus_match_signal(bus_, &props_slot_, nullptr, kPath, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                      on_properties_changed, this);
}

BusClient::~BusClient() { close(); }

void BusClient::close() {
  if (signals_slot_ != nullptr) signals_slot_ = sd_bus_slot_unref(signals_slot_);
  if (props_slot_ != nullptr) props_slot_ = sd_bus_slot_unref(props_slot_);
  if (bus_ != nullptr) bus_ = sd_bus_flush_close_unref(bus_);
}

std::string BusClient::unique_name() const {
  const char* n = nullptr;
  if (bus_ == nullptr || sd_bus_get_unique_name(bus_, &n) < 0) return {};
  return n;
}

Reply BusClient::call(const char* method, const char* types, ...) {
  va_list ap;
  va_start(ap, types);
  Reply r = callv(bus_, kName, method, types, ap);
  va_end(ap);
  return r;
}

Reply BusClient::call_on(const std::string& destination, const char* method, const char* types, ...) {
  va_list ap;
  va_start(ap, types);
  Reply r = callv(bus_, destination.c_str(), method, types, ap);
  va_end(ap);
  return r;
}

Reply BusClient::generate(const std::string& session, const std::string& prompt, const nlohmann::json& options) {
  Reply out;
  sd_bus_message* m = nullptr;
  int r = sd_bus_message_new_method_call(bus_, &m, kName, kPath, kInterface, "Generate");
  if (r >= 0) r = sd_bus_message_append(m, "ss", session.c_str(), prompt.c_str());
  if (r >= 0) r = sd_bus_message_open_container(m, 'a', "{sv}");
  for (const auto& [key, value] : options.items()) {
    if (r < 0) break;
    r = sd_bus_message_open_container(m, 'e', "sv");
    if (r >= 0) r = sd_bus_message_append(m, "s", key.c_str());
    if (r >= 0) r = append_value(m, value);
    if (r >= 0) r = sd_bus_message_close_container(m);
  }
  if (r >= 0) r = sd_bus_message_close_container(m);
  sd_bus_error error = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  if (r >= 0) r = sd_bus_call(bus_, m, 0, &error, &reply);
  if (r < 0) {
    out.error_name = error.name != nullptr ? error.name : "errno";
    out.error_message = error.message != nullptr ? error.message : std::strerror(-r);
  } else {
    out.msg = reply;
  }
  sd_bus_error_free(&error);
  if (m != nullptr) sd_bus_message_unref(m);
  return out;
}

Answer BusClient::generate_all(const std::string& session, const std::string& prompt, const nlohmann::json& options,
                               Reply* reply) {
  Reply r = generate(session, prompt, options);
  const std::string path = r.str();
  Answer a;
  if (r.ok()) {
    EXPECT_TRUE(wait_end(path)) << "the request " << path << " did not end";
    a = answers_[path];
  }
  if (reply != nullptr) *reply = std::move(r);
  return a;
}

bool BusClient::run_until(const std::function<bool()>& pred, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (bus_ == nullptr) return false;
    const int r = sd_bus_process(bus_, nullptr);
    if (r < 0) return false;
    if (r > 0) continue;
    if (std::chrono::steady_clock::now() > deadline) return false;
    sd_bus_wait(bus_, 100'000);
  }
  return true;
}

int BusClient::on_request_signal(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<BusClient*>(self_ptr);
  ++self->request_signals_;
  Answer& a = self->answers_[sd_bus_message_get_path(m)];
  const std::string member = sd_bus_message_get_member(m);
  a.signals.push_back(member);
  if (member == "Token") {
    const char* text = nullptr;
    if (sd_bus_message_read(m, "s", &text) >= 0) a.text += text;
  } else if (member == "Finished") {
    const char* reason = nullptr;
    if (sd_bus_message_read(m, "s", &reason) >= 0) a.finish_reason = reason;
    const auto stats = read_dict(m);
    for (const auto& [k, v] : stats.items()) a.stats[k] = v["value"];
  } else if (member == "Failed") {
    const char* name = nullptr;
    const char* message = nullptr;
    if (sd_bus_message_read(m, "ss", &name, &message) >= 0) {
      a.failed_name = name;
      a.failed_message = message;
    }
  }
  return 0;
}

int BusClient::on_properties_changed(sd_bus_message* m, void* self_ptr, sd_bus_error*) {
  auto* self = static_cast<BusClient*>(self_ptr);
  const char* iface = nullptr;
  if (sd_bus_message_read(m, "s", &iface) < 0 || std::string(iface) != kInterface) return 0;
  const auto changed = read_dict(m);
  if (changed.contains("ActiveSessions")) {
    self->active_changes_.push_back(changed["ActiveSessions"]["value"].get<std::uint32_t>());
  }
  return 0;
}

bool wait_for_name(const std::string& address, bool owned, std::chrono::seconds limit) {
  BusClient c(address);
  if (!c.connected()) return false;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    int has = 0;
    if (sd_bus_call_method(c.bus(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                           "NameHasOwner", &error, &reply, "s", kName) >= 0) {
      sd_bus_message_read(reply, "b", &has);
      sd_bus_message_unref(reply);
    }
    sd_bus_error_free(&error);
    if ((has != 0) == owned) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace llmd::test
