// D-Bus and the daemon's life: optional at run time (an unreachable bus or a taken name is a
// warning and the socket serves), which bus `bus` names, shutdown, SIGHUP, the setting's checks,
// and the policy and activation files loaded by a real dbus-daemon.
#include <sys/wait.h>

#include <fstream>
#include <thread>

#include "tests/dbus/dbus_fixture.h"

namespace llmd::test {
namespace {

bool log_says(const DaemonProcess& d, const std::string& what) {
  for (int i = 0; i < 500; ++i) {
    if (d.log().find(what) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST(DbusLifecycle, UnreachableBusIsAWarningAndTheSocketKeepsServing) {
  const std::string dir = scratch_dir();
  DaemonOptions o;
  o.args = {"--bus", "unix:path=" + dir + "/no-bus-here.sock"};
  DaemonProcess d(dir, o);
  ASSERT_TRUE(d.start()) << d.log();
  EXPECT_TRUE(log_says(d, "D-Bus: connecting to the bus at unix:path=" + dir + "/no-bus-here.sock")) << d.log();
  EXPECT_NE(d.log().find("llmd serves the socket only"), std::string::npos) << d.log();
  EXPECT_EQ(call(d.client(), "GET", "/v1/health").status, 200u);
  auto body = greedy_body(4);
  body["prompt"] = "Hello";
  EXPECT_EQ(call(d.client(), "POST", "/v1/completions", body).status, 200u);
  const int status = d.stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(DbusLifecycle, BusThatGoesAwayIsAWarningAndItsRequestsEnd) {
  PrivateBus bus;
  ASSERT_TRUE(bus.start());
  auto d = start_on_bus(bus);
  ASSERT_TRUE(d);
  {
    BusClient c(bus.address());
    auto options = greedy(1900);
    options["ignore_eos"] = true;
    Reply started = c.generate("", "Go on", options);
    ASSERT_TRUE(started.ok()) << started.error();
    ASSERT_TRUE(c.run_until([&] { return !c.answer(started.str()).signals.empty(); }));
    bus.stop();
  }
  EXPECT_TRUE(log_says(*d, "D-Bus is off until llmd restarts, the socket keeps serving")) << d->log();
  // Nobody can receive that answer any more: it was cancelled, and the socket serves on.
  nlohmann::json status;
  for (int i = 0; i < 500; ++i) {
    status = call(d->client(), "GET", "/v1/status").body;
    if (status["queue"]["in_flight"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(status["queue"]["in_flight"], 0) << status.dump();
  EXPECT_LT(status["counters"]["tokens_generated"].get<int>(), 1900);
  auto body = greedy_body(4);
  body["prompt"] = "Hello";
  EXPECT_EQ(call(d->client(), "POST", "/v1/completions", body).status, 200u);
  const int exit_status = d->stop();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status << "\n" << d->log();
}

TEST(DbusLifecycle, NameOwnedByAnotherLlmdIsAWarningAndBothServe) {
  PrivateBus bus;
  ASSERT_TRUE(bus.start());
  auto first = start_on_bus(bus);
  ASSERT_TRUE(first);
  DaemonOptions o;
  o.args = {"--bus", bus.address()};
  DaemonProcess second(scratch_dir(), o);
  ASSERT_TRUE(second.start()) << second.log();
  EXPECT_TRUE(log_says(second, "another connection owns it")) << second.log();
  EXPECT_NE(second.log().find("the socket keeps serving"), std::string::npos) << second.log();
  EXPECT_EQ(call(second.client(), "GET", "/v1/health").status, 200u);
  BusClient c(bus.address());
  Reply st = c.call("GetStatus");
  ASSERT_TRUE(st.ok()) << st.error();
  // The bus still reaches the first llmd.
  const auto shown = nlohmann::json::parse(st.str());
  EXPECT_EQ(shown["model"], call(first->client(), "GET", "/v1/status").body["model"]);
  EXPECT_EQ(second.stop(), 0);
}

// `bus = auto` is the session bus when DBUS_SESSION_BUS_ADDRESS is set; `session` and `system`
// follow DBUS_SESSION_BUS_ADDRESS and DBUS_SYSTEM_BUS_ADDRESS (pointed at the private bus here).
TEST(DbusLifecycle, AutoSessionAndSystemFindTheirBusLikeSdBusDoes) {
  PrivateBus bus;
  ASSERT_TRUE(bus.start());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"auto", "DBUS_SESSION_BUS_ADDRESS=" + bus.address()},
      {"session", "DBUS_SESSION_BUS_ADDRESS=" + bus.address()},
      {"system", "DBUS_SYSTEM_BUS_ADDRESS=" + bus.address()},
  };
  for (const auto& [setting, env] : cases) {
    DaemonOptions o;
    o.args = {"--bus", setting};
    o.env = {env};
    DaemonProcess d(scratch_dir(), o);
    ASSERT_TRUE(d.start()) << d.log();
    EXPECT_TRUE(wait_for_name(bus.address())) << setting << "\n" << d.log();
    const std::string which = setting == "auto" ? "session" : setting;
    EXPECT_TRUE(log_says(d, "D-Bus: serving org.llmd.LLM1 on the " + which + " bus")) << d.log();
    EXPECT_EQ(d.stop(), 0);
    EXPECT_TRUE(wait_for_name(bus.address(), /*owned=*/false)) << "the name outlived llmd";
  }
}

TEST(DbusLifecycle, ShutdownRefusesNewWorkAndFinishesRunning) {
  PrivateBus bus;
  ASSERT_TRUE(bus.start());
  auto d = start_on_bus(bus, {"--shutdown-timeout-ms", "600000"});
  ASSERT_TRUE(d);
  BusClient c(bus.address());
  auto options = greedy(400);  // still running when the calls below arrive, a few ms after SIGTERM
  options["ignore_eos"] = true;
  Reply started = c.generate("", "Go on", options);
  ASSERT_TRUE(started.ok()) << started.error();
  const std::string path = started.str();
  ASSERT_TRUE(c.run_until([&] { return !c.answer(path).signals.empty(); }));
  ::kill(d->pid(), SIGTERM);
  ASSERT_TRUE(log_says(*d, "stopping")) << d->log();
  // Draining: new work is refused by name, what is stored can still be read.
  Reply refused = c.generate("", "Hi", greedy(4));
  EXPECT_EQ(refused.error_name, "org.llmd.LLM1.Error.Unavailable") << refused.error();
  Reply no_session = c.call("CreateSession", "ss", "", "");
  EXPECT_EQ(no_session.error_name, "org.llmd.LLM1.Error.Unavailable") << no_session.error();
  Reply status = c.call("GetStatus");
  ASSERT_TRUE(status.ok()) << status.error();
  EXPECT_EQ(nlohmann::json::parse(status.str())["status"], "stopping");
  // The running request ends normally, with all its tokens; then llmd leaves the bus and exits.
  ASSERT_TRUE(c.wait_end(path));
  EXPECT_EQ(c.answer(path).signals.back(), "Finished") << c.answer(path).failed_message;
  EXPECT_EQ(c.answer(path).stats["completion_tokens"], 400);
  const int exit_status = d->stop(0);  // signal 0: no second stop signal, just wait for the exit
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status << "\n" << d->log();
  EXPECT_TRUE(wait_for_name(bus.address(), /*owned=*/false)) << "the name outlived llmd";
}

TEST(DbusLifecycle, SighupSaysTheBusNeedsARestart) {
  PrivateBus bus;
  ASSERT_TRUE(bus.start());
  const std::string dir = scratch_dir();
  write_file(dir + "/llmd.conf", "bus = " + bus.address() + "\n");
  DaemonOptions o;
  o.args = {"--config", dir + "/llmd.conf"};  // the bus comes from the file
  DaemonProcess d(dir, o);
  ASSERT_TRUE(d.start()) << d.log();
  ASSERT_TRUE(wait_for_name(bus.address())) << d.log();
  write_file(dir + "/llmd.conf", "bus = none\n");
  ::kill(d.pid(), SIGHUP);
  EXPECT_TRUE(log_says(d, "SIGHUP: bus changed; restart llmd to apply it")) << d.log();
  // Still on the bus.
  BusClient c(bus.address());
  EXPECT_TRUE(c.call("GetStatus").ok());
}

TEST(DbusConfig, BusSettingIsCheckedShownAndDocumented) {
  expect_refused_naming_the_key({{{"--bus", "bogus"}, "bus"}, {{"--bus", ":nothing"}, "bus"}});
  const std::vector<std::string> base = {llmd_binary(), "--config", "/dev/null", "--model", stories_path()};
  auto with = [&](std::vector<std::string> more) {
    auto argv = base;
    argv.insert(argv.end(), more.begin(), more.end());
    return run_program(argv);
  };
  const auto shown = with({"--check-config"});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE((shown.out + shown.err).find("bus = auto"), std::string::npos) << shown.out << shown.err;
  for (const char* good : {"system", "session", "none", "auto", "unix:path=/run/dbus/system_bus_socket"}) {
    const auto r = with({"--bus", good, "--check-config"});
    EXPECT_EQ(r.exit_code, 0) << good << ": " << r.err;
  }
  const auto help = with({"--help"});
  EXPECT_NE(help.out.find("--bus"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("DBUS_SESSION_BUS_ADDRESS"), std::string::npos) << help.out;
}

// The activation files parse in a real dbus-daemon (the name becomes activatable) and say what
// systemd needs; the policy file is in every PrivateBus (and OnlyRootOrUserLlmdMayOwnTheName).
TEST(DbusFiles, ActivationFilesLoadIntoARealBus) {
  for (const auto type : {PrivateBus::Type::system, PrivateBus::Type::session}) {
    PrivateBus bus(type);
    auto st = bus.start();
    ASSERT_TRUE(st) << st.error().to_string();
    BusClient c(bus.address());
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    ASSERT_GE(sd_bus_call_method(c.bus(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                 "ListActivatableNames", &error, &reply, nullptr),
              0);
    char** names = nullptr;
    ASSERT_GE(sd_bus_message_read_strv(reply, &names), 0);
    bool found = false;
    for (char** n = names; n != nullptr && *n != nullptr; ++n) {
      found = found || std::string(*n) == kName;
      std::free(*n);
    }
    std::free(names);
    sd_bus_message_unref(reply);
    sd_bus_error_free(&error);
    EXPECT_TRUE(found) << "org.llmd.LLM1 is not activatable\n" << bus.describe();
  }
  for (const auto& [file, system] : {std::pair<std::string, bool>{"/systemd/dbus/org.llmd.LLM1.service", true},
                                     {"/systemd/dbus/session/org.llmd.LLM1.service", false}}) {
    const std::string text = read_file(source_dir() + file);
    EXPECT_NE(text.find("[D-BUS Service]\n"), std::string::npos) << file;
    EXPECT_NE(text.find("\nName=org.llmd.LLM1\n"), std::string::npos) << file;
    EXPECT_NE(text.find("\nSystemdService=llmd.service\n"), std::string::npos) << file;
    EXPECT_NE(text.find("\nExec=/bin/false\n"), std::string::npos) << file;  // systemd starts llmd, never the bus
    EXPECT_EQ(text.find("\nUser=llmd\n") != std::string::npos, system) << file;
  }
}

}  // namespace
}  // namespace llmd::test
