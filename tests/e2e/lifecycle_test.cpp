// The daemon as a process: command line and config file, readiness and watchdog notifications,
// SIGHUP reload, and the safety rules for its socket path.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>
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
  // SIGTERM: STOPPING=1 before the exit (systemd then waits for the main process, not the watchdog).
  const int exit_status = d.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status;
  const auto after = d.notifications();
  EXPECT_TRUE(std::any_of(after.begin(), after.end(),
                          [](const std::string& n) { return n.find("STOPPING=1") != std::string::npos; }))
      << "no STOPPING=1 among " << after.size() << " notifications";
}

// The watchdog rate: with WATCHDOG_USEC=N llmd pings every N/2, so a window of 5 intervals holds
// about 10 pings. Counted, with wide bounds (a loaded machine delays timers; none may be early).
TEST(DaemonSystemd, WatchdogPingsAtHalfTheInterval) {
  constexpr auto kInterval = std::chrono::milliseconds(400);
  DaemonOptions o;
  o.env = {"WATCHDOG_USEC=" + std::to_string(std::chrono::microseconds(kInterval).count())};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto count_pings = [](const std::vector<std::string>& notes) {
    return std::count(notes.begin(), notes.end(), std::string("WATCHDOG=1"));
  };
  const auto before = count_pings(d.notifications());
  const auto window = 5 * kInterval;
  const auto pings = count_pings(d.notifications(window)) - before;
  const long expected = window / (kInterval / 2);  // 10
  EXPECT_GE(pings, 2) << "watchdog pings in " << window.count() << " ms";
  EXPECT_LE(pings, 3 * expected) << "watchdog pings in " << window.count() << " ms";
}

// The watchdog watches the engine thread, not only the io loop: a decode step that hangs
// (LLMD_FAULT_ENGINE_STALL_MS makes the first one sleep, as a hung llama_decode would) stops the
// pings while the io loop keeps serving; they resume when the engine makes progress again.
TEST(DaemonSystemd, WatchdogStopsPingingWhileTheEngineIsStalled) {
  constexpr auto kInterval = std::chrono::milliseconds(200);
  constexpr auto kStall = std::chrono::milliseconds(5000);
  DaemonOptions o;
  o.env = {"WATCHDOG_USEC=" + std::to_string(std::chrono::microseconds(kInterval).count()),
           "LLMD_FAULT_ENGINE_STALL_MS=" + std::to_string(kStall.count())};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto count_pings = [](const std::vector<std::string>& notes) {
    return std::count(notes.begin(), notes.end(), std::string("WATCHDOG=1"));
  };
  const auto wait_for_log = [&](const std::string& line) {
    for (int i = 0; i < 3000; ++i) {
      if (d.log().find(line) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  // An idle engine beats while it waits for work: the pings go on.
  const auto idle = count_pings(d.notifications());
  EXPECT_GE(count_pings(d.notifications(5 * kInterval)) - idle, 2) << d.log();

  // A completion: its first decode step stalls the engine.
  const auto before = count_pings(d.notifications());
  JsonReply reply;
  std::thread request([&] {
    reply = call(d.client(), "POST", "/v1/completions", nlohmann::json{{"prompt", "Once upon a time"}, {"max_tokens", 4}});
  });
  const bool withheld = wait_for_log("not pinging systemd");
  // Every ping sent before the daemon withheld one has arrived by now (it logs after sending).
  const auto at_withheld = count_pings(d.notifications());
  if (withheld) {
    // The io loop is not what stopped: it still answers.
    EXPECT_EQ(call(d.client(), "GET", "/v1/health").status, 200u);
  }
  const bool resumed = wait_for_log("makes progress again");
  // The daemon logs the recovery just before its first ping since: none in between.
  const auto at_resumed = count_pings(d.notifications());
  request.join();
  // Over the whole stalled request, far fewer pings than a running engine's one per half interval.
  EXPECT_LT(at_resumed - before, kStall / (kInterval / 2) / 2) << "pings during a " << kStall.count() << " ms stall";
  ASSERT_TRUE(withheld) << "the watchdog kept pinging while the engine was stalled:\n" << d.log();
  ASSERT_TRUE(resumed) << d.log();
  EXPECT_LE(at_resumed - at_withheld, 1);
  EXPECT_EQ(reply.status, 200u) << reply.body;

  // Progress again: the pings go on.
  const auto after = count_pings(d.notifications());
  EXPECT_GE(count_pings(d.notifications(5 * kInterval)) - after, 2);
  const int exit_status = d.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status;
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
  EXPECT_EQ(call(d.client(), "GET", "/v1/status").body["slots"].size(), 16u);
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

// Socket activation, following the installed units (systemd/, configured with this build's llmd
// in LLMD_TEST_UNIT_DIR): systemd-socket-activate listens where llmd.socket says, with its
// SocketMode; the first connection starts llmd with llmd.service's ExecStart command line (paths a
// test cannot use are moved into a scratch directory) on the inherited socket, and that first
// connection is served.

// The first value of Key= in a unit file ("" if none).
std::string unit_value(const std::string& path, const std::string& key) {
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  }
  return {};
}

// Replaces the specifiers systemd would expand (%t, %S, %E, in user mode) with scratch paths.
std::string expand(std::string s, const std::string& root) {
  for (const auto& [spec, path] : {std::pair<std::string, std::string>{"%t", root + "/run"}, {"%S", root + "/state"},
                                   {"%E", root + "/config"}}) {
    for (std::size_t at; (at = s.find(spec)) != std::string::npos;) s.replace(at, spec.size(), path);
  }
  return s;
}

// Sets --flag VALUE in argv (replacing a value the unit gives: llmd refuses a repeated flag).
void set_flag(std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  const auto it = std::find(argv.begin(), argv.end(), flag);
  if (it != argv.end() && it + 1 != argv.end()) {
    *(it + 1) = value;
  } else {
    argv.insert(argv.end(), {flag, value});
  }
}

void socket_activation(const std::string& units, bool user_mode) {
  const std::string dir = scratch_dir();
  const std::string socket_unit = units + "/llmd.socket", service_unit = units + "/llmd.service";
  std::string listen = unit_value(socket_unit, "ListenStream");
  ASSERT_FALSE(listen.empty()) << socket_unit;
  EXPECT_EQ(unit_value(socket_unit, "Accept"), "no");
  const std::string mode = unit_value(socket_unit, "SocketMode");
  EXPECT_EQ(mode, user_mode ? "0600" : "0666");
  // System paths (/run/llmd) move under the scratch directory; %t becomes dir/run.
  const std::string sock = user_mode ? expand(listen, dir) : dir + listen;
  std::filesystem::create_directories(std::filesystem::path(sock).parent_path());

  std::vector<std::string> argv;
  std::istringstream exec(expand(unit_value(service_unit, "ExecStart"), dir));
  for (std::string word; exec >> word;) argv.push_back(word);
  ASSERT_FALSE(argv.empty()) << service_unit;
  EXPECT_TRUE(std::filesystem::equivalent(argv[0], llmd_binary())) << argv[0];
  if (user_mode) {
    // The unit names ~/.config/llmd/llmd.conf (%E); the user writes the model there.
    const auto conf = std::find(argv.begin(), argv.end(), "--config");
    ASSERT_NE(conf, argv.end());
    std::filesystem::create_directories(std::filesystem::path(*(conf + 1)).parent_path());
    write_file(*(conf + 1), "model = " + stories_path() + "\n");
  } else {
    set_flag(argv, "--config", "/dev/null");  // not /etc/llmd/llmd.conf
    set_flag(argv, "--model", stories_path());
    set_flag(argv, "--state-dir", dir + "/state");
  }
  set_flag(argv, "--socket", dir + "/unused.sock");
  set_flag(argv, "--bus", "none");
  set_flag(argv, "--threads", "2");

  std::vector<std::string> cmd = {"/usr/bin/systemd-socket-activate", "-l", sock};
  cmd.insert(cmd.end(), argv.begin(), argv.end());
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string log = dir + "/llmd.log";
    std::freopen(log.c_str(), "a", stderr);
    std::vector<char*> args;
    for (auto& a : cmd) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  for (int i = 0; i < 500 && !std::filesystem::exists(sock); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(std::filesystem::exists(sock)) << "systemd-socket-activate did not create the socket";
  ::chmod(sock.c_str(), static_cast<mode_t>(std::stoul(mode, nullptr, 8)));  // what SocketMode= does
  // llmd is not running yet; this connection starts it and is answered.
  auto r = call(client::HttpClient(sock), "GET", "/v1/status");
  EXPECT_EQ(r.status, 200u) << r.raw << read_file(dir + "/llmd.log");
  EXPECT_FALSE(std::filesystem::exists(dir + "/unused.sock")) << "llmd bound its own socket instead";
  EXPECT_NE(read_file(dir + "/llmd.log").find("the socket systemd passed"), std::string::npos);
  if (user_mode) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/state/llmd/sessions.db")) << "state not under %S/llmd";
  }
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(DaemonSystemd, SocketActivation) { socket_activation(LLMD_TEST_UNIT_DIR, /*user_mode=*/false); }

TEST(DaemonSystemd, SocketActivationUserUnits) { socket_activation(LLMD_TEST_UNIT_DIR "/user", /*user_mode=*/true); }

}  // namespace
}  // namespace llmd::test
