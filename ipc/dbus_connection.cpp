// sd-bus on the io_context (see dbus_connection.h).
#include "ipc/dbus_connection.h"

#include <poll.h>

#include <chrono>
#include <cstring>

#include <boost/asio/post.hpp>

namespace llmd::ipc {
namespace asio = boost::asio;

namespace {

// Messages handled per wake-up before other io work gets a turn.
constexpr int kMaxBurst = 64;

}  // namespace

std::string describe_bus(const std::string& bus) {
  if (bus == "system" || bus == "session") return "the " + bus + " bus";
  return "the bus at " + bus;
}

std::optional<std::string> resolve_bus(const std::string& setting, const char* session_env) {
  if (setting == "none") return std::nullopt;
  if (setting == "auto") return std::string(session_env != nullptr && *session_env != '\0' ? "session" : "system");
  return setting;
}

Result<std::unique_ptr<BusConnection>> BusConnection::open(asio::io_context& io, const std::string& bus) {
  sd_bus* b = nullptr;
  int r = 0;
  if (bus == "system") {
    r = sd_bus_open_system_with_description(&b, "llmd");
  } else if (bus == "session") {
    r = sd_bus_open_user_with_description(&b, "llmd");
  } else {
    r = sd_bus_new(&b);
    if (r >= 0) r = sd_bus_set_address(b, bus.c_str());
    if (r >= 0) r = sd_bus_set_bus_client(b, 1);
    if (r >= 0) r = sd_bus_set_description(b, "llmd");
    if (r >= 0) r = sd_bus_start(b);
  }
  if (r < 0) {
    if (b != nullptr) sd_bus_close_unref(b);
    return errno_error(-r, "connecting to " + describe_bus(bus));
  }
  const int fd = sd_bus_get_fd(b);
  if (fd < 0) {
    sd_bus_close_unref(b);
    return errno_error(-fd, "the connection to " + describe_bus(bus) + " has no descriptor");
  }
  std::unique_ptr<BusConnection> c(new BusConnection(io, b, fd));
  c->arm();
  return c;
}

BusConnection::BusConnection(asio::io_context& io, sd_bus* bus, int fd) : io_(io), bus_(bus), fd_(io, fd), timer_(io) {}

BusConnection::~BusConnection() { close(); }

void BusConnection::close() {
  if (bus_ == nullptr) return;
  // sd-bus owns the descriptor: stop watching it without closing it.
  fd_.release();
  timer_.cancel();
  sd_bus_close_unref(bus_);
  bus_ = nullptr;
}

void BusConnection::lost(const std::string& why) {
  close();
  if (auto cb = std::move(on_lost_)) cb(why);
}

void BusConnection::process() {
  if (bus_ == nullptr) return;
  for (int i = 0; i < kMaxBurst; ++i) {
    const int r = sd_bus_process(bus_, nullptr);
    if (bus_ == nullptr) return;
    if (r < 0) return lost(std::string("the connection to the bus failed: ") + std::strerror(-r));
    if (r == 0) return arm();
  }
  wake();  // more to do, after other io work
}

void BusConnection::wake() {
  if (bus_ == nullptr || wake_posted_) return;
  wake_posted_ = true;
  asio::post(io_, [this, alive = std::weak_ptr<char>(alive_)] {
    if (alive.expired()) return;
    wake_posted_ = false;
    process();
  });
}

bool BusConnection::flushed() const {
  if (bus_ == nullptr) return true;
  const int events = sd_bus_get_events(bus_);
  return events < 0 || (events & POLLOUT) == 0;
}

void BusConnection::arm() {
  if (bus_ == nullptr) return;
  if (sd_bus_is_open(bus_) <= 0) return lost("the bus closed the connection");
  const int events = sd_bus_get_events(bus_);
  if (events < 0) return lost(std::string("the connection to the bus failed: ") + std::strerror(-events));
  const std::weak_ptr<char> alive = alive_;
  auto on_ready = [this, alive](bool& flag) {
    return [this, alive, &flag](const boost::system::error_code& ec) {
      if (alive.expired()) return;
      flag = false;
      if (ec == asio::error::operation_aborted) return;
      process();  // other errors: sd_bus_process reports them
    };
  };
  if ((events & POLLIN) != 0 && !reading_) {
    reading_ = true;
    fd_.async_wait(asio::posix::descriptor_base::wait_read, on_ready(reading_));
  }
  if ((events & POLLOUT) != 0 && !writing_) {
    writing_ = true;
    fd_.async_wait(asio::posix::descriptor_base::wait_write, on_ready(writing_));
  }
  std::uint64_t at = UINT64_MAX;  // absolute CLOCK_MONOTONIC microseconds, as steady_clock counts
  if (sd_bus_get_timeout(bus_, &at) < 0) at = UINT64_MAX;
  if (at == timer_at_) return;
  timer_at_ = at;
  timer_.cancel();
  if (at == UINT64_MAX) return;
  timer_.expires_at(std::chrono::steady_clock::time_point(std::chrono::microseconds(at)));
  timer_.async_wait([this, alive, at](const boost::system::error_code& ec) {
    if (alive.expired() || ec == asio::error::operation_aborted) return;
    if (timer_at_ == at) timer_at_ = UINT64_MAX;
    process();
  });
}

}  // namespace llmd::ipc
