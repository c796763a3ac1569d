// org.llmd.LLM1 through busctl, the command-line client every systemd machine has: every method
// and property, the errors' messages, and introspection (the service's own XML).
#include <thread>

#include "tests/dbus/dbus_fixture.h"

namespace llmd::test {
namespace {

using DbusBusctl = LlmdOnBus;

// busctl --json=short output of a call or get-property: {"type": ..., "data": ...}.
nlohmann::json json_of(const ProgramResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

TEST_F(DbusBusctl, EveryMethodAndProperty) {
  const auto created = json_of(busctl_call(address(), {"CreateSession", "ss", "Be brief.", "notes"}));
  ASSERT_EQ(created["type"], "s");
  const std::string id = created["data"][0];

  const auto list = json_of(busctl_call(address(), {"ListSessions"}));
  ASSERT_EQ(list["type"], "aa{sv}");
  ASSERT_EQ(list["data"][0].size(), 1u);
  const auto& s = list["data"][0][0];
  EXPECT_EQ(s["id"]["data"], id);
  EXPECT_EQ(s["app"]["data"], "notes");
  EXPECT_EQ(s["system_prompt"]["data"], "Be brief.");
  EXPECT_EQ(s["uid"]["type"], "u");
  EXPECT_EQ(s["messages"]["data"], 1);

  const auto generated = json_of(busctl_call(
      address(), {"Generate", "ssa{sv}", id, "Hello", "2", "max_tokens", "u", "4", "temperature", "d", "0"}));
  EXPECT_EQ(generated["type"], "o");
  EXPECT_EQ(generated["data"][0].get<std::string>().rfind("/org/llmd/LLM1/request/", 0), 0u) << generated.dump();

  // Cancel: a request of another connection of the same uid may be cancelled by it.
  BusClient owner(address());
  auto options = greedy(1900);
  options["ignore_eos"] = true;
  Reply started = owner.generate("", "Go on", options);
  ASSERT_TRUE(started.ok()) << started.error();
  ASSERT_TRUE(owner.run_until([&] { return !owner.answer(started.str()).signals.empty(); }));
  const auto cancel = busctl_call(address(), {"Cancel", "o", started.str()});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  ASSERT_TRUE(owner.wait_end(started.str()));
  EXPECT_EQ(owner.answer(started.str()).failed_name, "org.llmd.LLM1.Error.Cancelled");

  const auto status = json_of(busctl_call(address(), {"GetStatus"}));
  ASSERT_EQ(status["type"], "s");
  const auto st = nlohmann::json::parse(status["data"][0].get<std::string>());
  EXPECT_EQ(st["caller"]["uid"], 0);
  EXPECT_EQ(st["sessions"]["total"], 1);

  const auto deleted = busctl_call(address(), {"DeleteSession", "s", id});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_EQ(json_of(busctl_call(address(), {"ListSessions"}))["data"][0].size(), 0u);

  // Properties.
  auto prop = [&](const char* name) {
    return json_of(busctl(address(), {"--json=short", "get-property", kName, kPath, kInterface, name}));
  };
  EXPECT_EQ(prop("Model")["type"], "s");
  EXPECT_EQ(prop("Model")["data"], st["model"]["id"]);
  EXPECT_EQ(prop("Version")["data"], st["version"]);
  EXPECT_EQ(prop("Slots")["type"], "u");
  EXPECT_EQ(prop("Slots")["data"], st["context"]["slots"]);
  EXPECT_EQ(prop("ActiveSessions")["type"], "u");
  EXPECT_EQ(prop("ActiveSessions")["data"], 0);
}

TEST_F(DbusBusctl, ErrorsCarryTheirMessages) {
  // busctl prints an error's message (not its name) and fails.
  auto fails_saying = [&](std::vector<std::string> call, const std::string& says) {
    const auto r = busctl_call(address(), call);
    EXPECT_NE(r.exit_code, 0) << call[0];
    EXPECT_NE(r.err.find(says), std::string::npos) << call[0] << ": " << r.err;
  };
  fails_saying({"DeleteSession", "s", "ses_nope"}, "no session ses_nope");
  fails_saying({"Generate", "ssa{sv}", "ses_nope", "Hi", "0"}, "no session ses_nope");
  fails_saying({"Generate", "ssa{sv}", "", "Hi", "1", "max_tokens", "s", "ten"}, "max_tokens must be an integer");
  fails_saying({"Generate", "ssa{sv}", "", "Hi", "1", "temperature", "ai", "1", "3"},
               "option temperature has D-Bus type ai");
  fails_saying({"Generate", "ssa{sv}", "", "Hi", "1", "colour", "s", "red"}, "unknown option colour");
  fails_saying({"Cancel", "o", "/org/llmd/LLM1/request/12345"}, "no request /org/llmd/LLM1/request/12345");
  fails_saying({"Generate", "ss", "", "Hi"}, "expecting 'ssa{sv}'");
}

TEST_F(DbusBusctl, IntrospectShowsTheInterfacesAndARequestObjectWhileItRuns) {
  const auto r = busctl(address(), {"introspect", "--xml-interface", kName, kPath});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want :
       {R"(<method name="Generate">)", R"(<arg type="a{sv}" name="options" direction="in"/>)",
        R"(<arg type="o" name="request" direction="out"/>)", R"(<property name="ActiveSessions" type="u" access="read">)"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  }
  // The table view: flags of the properties.
  const auto table = busctl(address(), {"introspect", kName, kPath, kInterface});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  for (const char* want : {".Generate", "ssa{sv}", ".ActiveSessions", "emits-change", ".Slots", "const"}) {
    EXPECT_NE(table.out.find(want), std::string::npos) << want << "\n" << table.out;
  }

  BusClient c(address());
  auto options = greedy(1900);
  options["ignore_eos"] = true;
  Reply started = c.generate("", "Go on", options);
  ASSERT_TRUE(started.ok()) << started.error();
  const std::string path = started.str();
  const auto req = busctl(address(), {"introspect", kName, path});
  EXPECT_EQ(req.exit_code, 0) << req.err;
  for (const char* want : {"org.llmd.LLM1.Request", ".Token", ".Finished", ".Failed", "sa{sv}"}) {
    EXPECT_NE(req.out.find(want), std::string::npos) << want << "\n" << req.out;
  }
  ASSERT_TRUE(c.call("Cancel", "o", path.c_str()).ok());
  ASSERT_TRUE(c.wait_end(path));
  const auto gone = busctl(address(), {"introspect", kName, path, kRequestInterface});
  EXPECT_EQ(gone.out.find(".Token"), std::string::npos) << gone.out;
}

}  // namespace
}  // namespace llmd::test
