// A connection to a D-Bus message bus (sd-bus), driven by the daemon's Boost.Asio io_context: no
// thread and no loop of its own. After every wake-up (the bus socket readable or writable, or
// sd-bus's timeout reached) it runs sd_bus_process until there is nothing left to do, then asks
// sd-bus what to wait for next (sd_bus_get_events, sd_bus_get_timeout) and waits for that: a
// posix::stream_descriptor on sd-bus's socket (which sd-bus keeps owning: it is released, never
// closed, here) and a steady_timer. The pattern of openbmc/sdbusplus asio/connection.hpp, plus the
// write side and the timeout, which it leaves out.
//
// A message sent outside a bus callback (a signal for a token, a late method reply) is queued by
// sd-bus; call wake() after it so a partial write gets its POLLOUT wait and new timeouts count.
//
// Thread-safety: everything, including the callbacks sd-bus makes, runs on the io thread.
#pragma once

#include <systemd/sd-bus.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/result.h"

namespace llmd::ipc {

// Which bus a `bus` setting names: "system", "session", a D-Bus address ("unix:path=..."), or
// nullopt for "none". "auto" is the session bus when DBUS_SESSION_BUS_ADDRESS is set (session_env
// not null and not empty), else the system bus.
std::optional<std::string> resolve_bus(const std::string& setting, const char* session_env);

// "the system bus", "the session bus", "the bus at ADDRESS": for messages.
std::string describe_bus(const std::string& bus);

// A held reference to an sd-bus message (a method call answered later, a message being built).
class MessageRef {
 public:
  MessageRef() = default;
  explicit MessageRef(sd_bus_message* m) : m_(sd_bus_message_ref(m)) {}
  static MessageRef adopt(sd_bus_message* m) {  // takes over a reference the caller owns
    MessageRef r;
    r.m_ = m;
    return r;
  }
  MessageRef(const MessageRef& o) : m_(o.m_ ? sd_bus_message_ref(o.m_) : nullptr) {}
  MessageRef(MessageRef&& o) noexcept : m_(o.m_) { o.m_ = nullptr; }
  MessageRef& operator=(MessageRef o) noexcept {
    std::swap(m_, o.m_);
    return *this;
  }
  ~MessageRef() {
    if (m_) sd_bus_message_unref(m_);
  }
  sd_bus_message* get() const { return m_; }
  explicit operator bool() const { return m_ != nullptr; }

 private:
  sd_bus_message* m_ = nullptr;
};

// An owned sd_bus_slot (a vtable, a match, a pending call): unref'd, so removed, on destruction.
struct SlotUnref {
  void operator()(sd_bus_slot* s) const { sd_bus_slot_unref(s); }
};
using SlotRef = std::unique_ptr<sd_bus_slot, SlotUnref>;

class BusConnection {
 public:
  // Connects to `bus` (as resolve_bus names it): "system" and "session" follow sd-bus's own rules
  // (DBUS_SYSTEM_BUS_ADDRESS, DBUS_SESSION_BUS_ADDRESS, the standard sockets). The connection
  // authenticates and says Hello asynchronously; a failure then is reported through on_lost.
  // Errors: what sd_bus_start said (no such socket, refused, bad address).
  static Result<std::unique_ptr<BusConnection>> open(boost::asio::io_context& io, const std::string& bus);
  ~BusConnection();  // releases (never closes) the descriptor, then closes the bus without flushing

  BusConnection(const BusConnection&) = delete;
  BusConnection& operator=(const BusConnection&) = delete;

  sd_bus* bus() const { return bus_; }
  // Called once, on the io thread, if the connection fails or the bus goes away (the reason as
  // text); the connection is closed by then. Not called for close().
  void set_on_lost(std::function<void(const std::string&)> on_lost) { on_lost_ = std::move(on_lost); }

  // Processes and re-arms soon (posted, coalesced): after sending outside a bus callback.
  void wake();
  // True when nothing waits to be written to the bus.
  bool flushed() const;
  bool is_open() const { return bus_ != nullptr; }
  // Closes the connection now (queued messages not yet written are dropped: see flushed()).
  void close();

 private:
  BusConnection(boost::asio::io_context& io, sd_bus* bus, int fd);
  void process();
  void arm();
  void lost(const std::string& why);

  boost::asio::io_context& io_;
  sd_bus* bus_;
  boost::asio::posix::stream_descriptor fd_;
  boost::asio::steady_timer timer_;
  bool reading_ = false, writing_ = false, wake_posted_ = false;
  std::uint64_t timer_at_ = 0;  // the sd-bus timeout the timer waits for (UINT64_MAX: none)
  std::function<void(const std::string&)> on_lost_;
  // Handlers hold a weak reference: one that runs after the connection is gone does nothing.
  std::shared_ptr<char> alive_ = std::make_shared<char>();
};

}  // namespace llmd::ipc
