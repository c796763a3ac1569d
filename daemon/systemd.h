// systemd integration, in the daemon itself: readiness and status (sd_notify), the watchdog,
// and socket activation. All of it is inert when systemd did not start the daemon.
#pragma once

#include <chrono>
#include <functional>
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
// With a progress source (the engine thread's heartbeat, core::EngineWorker::last_progress()), it
// pings only while the last progress is younger than the interval: an engine step that runs longer
// (a hung llama_decode) stops the pings, and systemd restarts the daemon within another interval.
// The watched thread must show progress at least every heartbeat_period(interval) while it is idle.
// Withheld pings are logged once per stall, and the recovery too. Runs on the io thread.
class Watchdog {
 public:
  using Progress = std::function<std::chrono::steady_clock::time_point()>;

  Watchdog(boost::asio::io_context& io, std::chrono::microseconds interval, Progress progress = {});
  void start();
  void stop();
  // A quarter of the interval: well inside it, however the wake-ups and the pings fall.
  static std::chrono::milliseconds heartbeat_period(std::chrono::microseconds interval);

 private:
  void schedule();
  void ping();
  boost::asio::steady_timer timer_;
  std::chrono::microseconds interval_;
  std::chrono::microseconds period_;
  Progress progress_;
  bool running_ = false;
  bool withheld_ = false;  // the last ping was withheld (the engine made no progress)
};

}  // namespace llmd::daemon
