// sd_notify, watchdog and socket activation (see systemd.h).
#include "daemon/systemd.h"

#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include <algorithm>

#include <spdlog/spdlog.h>

namespace llmd::daemon {

void notify(const std::string& state) { sd_notify(0, state.c_str()); }

std::vector<int> activation_sockets() {
  std::vector<int> fds;
  const int n = sd_listen_fds(/*unset_environment=*/1);
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    if (sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0) > 0) fds.push_back(fd);
  }
  return fds;
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0) return std::chrono::microseconds(usec);
  return std::nullopt;
}

Watchdog::Watchdog(boost::asio::io_context& io, std::chrono::microseconds interval, Progress progress)
    : timer_(io), interval_(interval), period_(interval / 2), progress_(std::move(progress)) {}

std::chrono::milliseconds Watchdog::heartbeat_period(std::chrono::microseconds interval) {
  return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(interval / 4));
}

void Watchdog::start() {
  running_ = true;
  ping();
  schedule();
}

void Watchdog::stop() {
  running_ = false;
  timer_.cancel();
}

void Watchdog::ping() {
  if (progress_) {
    const auto stalled = std::chrono::steady_clock::now() - progress_();
    if (stalled >= interval_) {
      if (!withheld_) {
        spdlog::error("watchdog: the engine thread has made no progress for {} ms; not pinging systemd",
                      std::chrono::duration_cast<std::chrono::milliseconds>(stalled).count());
      }
      withheld_ = true;
      return;
    }
    if (withheld_) spdlog::warn("watchdog: the engine thread makes progress again; pinging systemd");
    withheld_ = false;
  }
  notify("WATCHDOG=1");
}

void Watchdog::schedule() {
  timer_.expires_after(period_);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || !running_) return;
    ping();
    schedule();
  });
}

}  // namespace llmd::daemon
