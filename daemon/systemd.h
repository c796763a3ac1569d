// systemd integration, in the daemon itself: readiness and status (sd_notify), the watchdog,
// and socket activation. All of it is inert when systemd did not start the daemon.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace llmd::daemon {

// sd_notify(state), e.g. "READY=1\nSTATUS=serving". No-op without NOTIFY_SOCKET.
void notify(const std::string& state);

// Listening Unix stream sockets passed by systemd (socket activation); empty if none.
std::vector<int> activation_sockets();

// The watchdog interval systemd asks for (WATCHDOG_USEC for this pid), if any.
std::optional<std::chrono::microseconds> watchdog_interval();

// Pings WATCHDOG=1 at half the interval from the io thread, so a wedged io thread is noticed.
class Watchdog {
 public:
  Watchdog(boost::asio::io_context& io, std::chrono::microseconds interval);
  void start();
  void stop();

 private:
  void schedule();
  boost::asio::steady_timer timer_;
  std::chrono::microseconds period_;
  bool running_ = false;
};

}  // namespace llmd::daemon
