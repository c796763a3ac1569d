// The daemon as a process: command line and config file, readiness and watchdog notifications,
// SIGHUP reload, and the safety rules for its socket path.
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

TEST(DaemonCommandLine, HelpVersionAndErrors) {
  auto help = run_program({llmd_binary(), "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--model", "--socket", "--state-dir", "--threads", "--slots", "--ctx", "--config",
                           "--version", "--check-config"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
  auto version = run_program({llmd_binary(), "--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.out.find("llama.cpp 0.5.0"), std::string::npos) << version.out;

  auto no_model = run_program({llmd_binary(), "--config", "/dev/null"}, {}, {"LLMD_MODEL="});
  EXPECT_EQ(no_model.exit_code, 2);
  EXPECT_NE(no_model.err.find("no model configured"), std::string::npos) << no_model.err;

  auto unknown = run_program({llmd_binary(), "--frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("frobnicate"), std::string::npos);

  auto range = run_program({llmd_binary(), "--config", "/dev/null", "--model", stories_path(), "--slots", "0"});
  EXPECT_EQ(range.exit_code, 2);
  EXPECT_NE(range.err.find("slots"), std::string::npos);
}

TEST(DaemonCommandLine, ConfigFileAndCheckConfig) {
  const std::string dir = scratch_dir();
  write_file(dir + "/llmd.conf", "# test configuration\nmodel = " + stories_path() +
                                      "\nslots = 3\nsocket = " + dir + "/x.sock\n");
  auto ok = run_program({llmd_binary(), "--config", dir + "/llmd.conf", "--check-config"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("slots = 3"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("configuration OK"), std::string::npos);
  // The command line wins over the file.
  auto override = run_program({llmd_binary(), "--config", dir + "/llmd.conf", "--slots", "5", "--check-config"});
  EXPECT_NE(override.out.find("slots = 5"), std::string::npos) << override.out;
  // LLMD_MODEL comes between the flag and the file.
  auto env = run_program({llmd_binary(), "--config", dir + "/llmd.conf", "--check-config"}, {},
                         {"LLMD_MODEL=" + generated_model("tiny-q8_0")});
  EXPECT_NE(env.out.find("tiny-q8_0"), std::string::npos) << env.out;

  write_file(dir + "/bad.conf", "model = " + stories_path() + "\nslotz = 3\n");
  auto bad_key = run_program({llmd_binary(), "--config", dir + "/bad.conf", "--check-config"});
  EXPECT_EQ(bad_key.exit_code, 2);
  EXPECT_NE(bad_key.err.find("slotz"), std::string::npos) << bad_key.err;

  auto missing = run_program({llmd_binary(), "--config", dir + "/nope.conf"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("nope.conf"), std::string::npos);

  write_file(dir + "/broken.gguf", "not a model");
  auto bad_model = run_program({llmd_binary(), "--config", "/dev/null", "--model", dir + "/broken.gguf", "--check-config"});
  EXPECT_EQ(bad_model.exit_code, 1);
  EXPECT_NE(bad_model.err.find("not a GGUF"), std::string::npos) << bad_model.err;
}

TEST(DaemonStartup, BadModelFailsWithAClearMessage) {
  const std::string dir = scratch_dir();
  write_file(dir + "/empty.gguf", "");
  DaemonOptions o;
  o.model = dir + "/empty.gguf";
  DaemonProcess d(dir, o);
  auto st = d.start();
  ASSERT_FALSE(st);
  EXPECT_NE(d.log().find("model file is empty"), std::string::npos) << d.log();
}

TEST(DaemonStartup, RefusesToReplaceANonSocketOrALiveSocket) {
  const std::string dir = scratch_dir();
  write_file(dir + "/llmd.sock", "precious data");
  DaemonProcess d(dir);
  ASSERT_FALSE(d.start());
  EXPECT_NE(d.log().find("not a socket"), std::string::npos) << d.log();
  EXPECT_EQ(read_file(dir + "/llmd.sock"), "precious data");
  ::unlink((dir + "/llmd.sock").c_str());

  DaemonProcess first(dir);
  ASSERT_TRUE(first.start()) << first.log();
  const std::string other = scratch_dir();
  DaemonOptions same_socket;
  same_socket.args = {"--socket", dir + "/llmd.sock"};
  // A second daemon on the same (live) socket refuses, and the first keeps serving.
  auto second = run_program({llmd_binary(), "--config", "/dev/null", "--model", stories_path(), "--socket",
                             dir + "/llmd.sock", "--state-dir", other + "/state", "--threads", "1"});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("another process is serving"), std::string::npos) << second.err;
  EXPECT_EQ(call(first.client(), "GET", "/v1/health").status, 200u);
}

TEST(DaemonStartup, StaleSocketOfADeadDaemonIsReplaced) {
  const std::string dir = scratch_dir();
  {
    DaemonProcess d(dir);
    ASSERT_TRUE(d.start()) << d.log();
    d.kill9();  // leaves its socket file behind
  }
  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_EQ(call(again.client(), "GET", "/v1/health").status, 200u);
}

TEST(DaemonSystemd, ReadyStatusAndWatchdogNotifications) {
  DaemonOptions o;
  o.env = {"WATCHDOG_USEC=200000"};  // sd_watchdog_enabled also wants WATCHDOG_PID or none
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto notes = d.notifications(std::chrono::milliseconds(1000));
  bool ready = false, status = false;
  int pings = 0;
  for (const auto& n : notes) {
    ready = ready || n.find("READY=1") != std::string::npos;
    status = status || n.find("STATUS=serving") != std::string::npos;
    pings += n == "WATCHDOG=1" ? 1 : 0;
  }
  EXPECT_TRUE(ready);
  EXPECT_TRUE(status);
  // Half the 200 ms interval: about ten pings in a second; a loaded machine may deliver fewer.
  EXPECT_GE(pings, 3) << "watchdog pings in ~1 s: " << pings;
}

TEST(DaemonSignals, SighupReloadsLimits) {
  const std::string dir = scratch_dir();
  write_file(dir + "/llmd.conf", "max-body-bytes = 1048576\n");
  DaemonOptions o;
  o.args = {"--config", dir + "/llmd.conf"};
  DaemonProcess d(dir, o);
  ASSERT_TRUE(d.start()) << d.log();
  const nlohmann::json big = {{"prompt", std::string(3000, 'a')}, {"max_tokens", 1}};
  EXPECT_NE(call(d.client(), "POST", "/v1/completions", big).status, 413u);
  write_file(dir + "/llmd.conf", "max-body-bytes = 2048\nslots = 7\n");
  ::kill(d.pid(), SIGHUP);
  // Reloaded when the daemon says so.
  bool reloaded = false;
  for (int i = 0; i < 100 && !reloaded; ++i) {
    reloaded = d.log().find("configuration reloaded") != std::string::npos;
    if (!reloaded) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(reloaded) << d.log();
  EXPECT_EQ(call(d.client(), "POST", "/v1/completions", big).status, 413u);
  EXPECT_NE(d.log().find("restart llmd to apply"), std::string::npos);  // slots cannot change live
  EXPECT_EQ(call(d.client(), "GET", "/v1/status").body["slots"].size(), 4u);
}

TEST(DaemonSignals, SigintStopsCleanly) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const int status = d.stop(SIGINT);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(std::filesystem::exists(d.socket())) << "the socket file is left behind";
}

}  // namespace
}  // namespace llmd::test

namespace llmd::test {
namespace {

// Socket activation: systemd-socket-activate holds the listening socket; the first connection
// starts llmd on the inherited socket, and that first connection is served.
TEST(DaemonSystemd, SocketActivation) {
  const std::string dir = scratch_dir();
  const std::string sock = dir + "/activated.sock";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string log = dir + "/llmd.log";
    std::freopen(log.c_str(), "a", stderr);
    ::execl("/usr/bin/systemd-socket-activate", "systemd-socket-activate", "-l", sock.c_str(), llmd_binary().c_str(),
            "--config", "/dev/null", "--model", stories_path().c_str(), "--state-dir", (dir + "/state").c_str(),
            "--socket", (dir + "/unused.sock").c_str(), "--threads", "2", "--bus", "none", static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 500 && !std::filesystem::exists(sock); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(std::filesystem::exists(sock)) << "systemd-socket-activate did not create the socket";
  // llmd is not running yet; this connection starts it and is answered.
  auto r = call(client::HttpClient(sock), "GET", "/v1/status");
  EXPECT_EQ(r.status, 200u) << r.raw << read_file(dir + "/llmd.log");
  EXPECT_FALSE(std::filesystem::exists(dir + "/unused.sock")) << "llmd bound its own socket instead";
  EXPECT_NE(read_file(dir + "/llmd.log").find("the socket systemd passed"), std::string::npos);
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace llmd::test
