// A private dbus-daemon for a test: its own configuration (a unix socket in a temp directory that
// every uid may reach, EXTERNAL authentication, the default policy of a system bus, which denies
// method calls and owning names unless a policy file allows them), into which the project's real
// D-Bus policy file (systemd/dbus/org.llmd.LLM1.conf) is included and whose service directory is
// systemd/dbus (or systemd/dbus/session), so both files are loaded by the real parser.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.h"

namespace llmd::test {

// The source tree (for systemd/dbus/...).
std::string source_dir();

class PrivateBus {
 public:
  enum class Type { system, session };
  explicit PrivateBus(Type type = Type::system);
  ~PrivateBus();  // stops the daemon, removes its directory
  PrivateBus(const PrivateBus&) = delete;
  PrivateBus& operator=(const PrivateBus&) = delete;

  // Starts dbus-daemon and waits for its address. Errors carry its output.
  Status start();
  // Stops the daemon now (every connection to it breaks).
  void stop();
  // "unix:path=...,guid=...".
  const std::string& address() const { return address_; }
  // The generated configuration and the daemon's output, for failure messages.
  std::string describe() const;

 private:
  Type type_;
  std::string dir_, config_path_, log_path_, address_;
  pid_t pid_ = -1;
};

}  // namespace llmd::test
