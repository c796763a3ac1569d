// A private dbus-daemon (see private_bus.h).
#include "tests/dbus/private_bus.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "tests/support/test_env.h"

namespace llmd::test {

std::string source_dir() { return LLMD_TEST_SOURCE_DIR; }

PrivateBus::PrivateBus(Type type) : type_(type) {
  // A short path of its own: a unix socket path holds at most 107 bytes.
  std::string tmpl = (std::filesystem::temp_directory_path() / "llmd-bus.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) != nullptr) {
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);  // other uids reach the socket
  }
  config_path_ = dir_ + "/bus.conf";
  log_path_ = dir_ + "/dbus-daemon.log";
}

PrivateBus::~PrivateBus() {
  stop();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void PrivateBus::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string PrivateBus::describe() const {
  return "dbus-daemon configuration:\n" + read_file(config_path_) + "\ndbus-daemon output:\n" + read_file(log_path_);
}

Status PrivateBus::start() {
  if (dir_.empty()) return Error(Errc::io_error, "cannot create a directory for the private bus");
  const bool system = type_ == Type::system;
  const std::string services = source_dir() + (system ? "/systemd/dbus" : "/systemd/dbus/session");
  // The default policy is a system bus's (dbus's own system.conf); the included file must allow
  // what llmd needs. A session bus allows everything, as the real one does.
  const std::string default_policy = system ? R"(
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
  </policy>
  <include>)" + source_dir() + R"(/systemd/dbus/org.llmd.LLM1.conf</include>)"
                                            : R"(
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>)";
  write_file(config_path_, std::string(R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>)") + (system ? "system" : "session") + R"(</type>
  <listen>unix:path=)" + dir_ + R"(/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <servicedir>)" + services + R"(</servicedir>)" + default_policy + R"(
</busconfig>
)");
  int out[2];
  if (::pipe(out) != 0) return errno_error(errno, "pipe");
  const pid_t pid = ::fork();
  if (pid < 0) return errno_error(errno, "fork");
  if (pid == 0) {
    ::umask(0);  // the socket: every uid may connect (the bus's policy decides the rest)
    const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(log, STDERR_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    const std::string config = "--config-file=" + config_path_;
    ::execl("/usr/bin/dbus-daemon", "dbus-daemon", config.c_str(), "--print-address=1", "--nofork",
            static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  pid_ = pid;
  std::string line;
  while (line.find('\n') == std::string::npos) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 30000) <= 0) break;
    char buf[512];
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    line.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  const auto nl = line.find('\n');
  if (nl == std::string::npos) return Error(Errc::internal, "dbus-daemon did not print its address\n" + describe());
  address_ = line.substr(0, nl);
  return {};
}

}  // namespace llmd::test
