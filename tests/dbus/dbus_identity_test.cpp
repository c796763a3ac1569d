// Who is calling, on the bus: the uid the bus daemon reports for a connection decides (another uid
// is refused like on the socket), and a client that leaves the bus has its requests cancelled.
#include <unistd.h>

#include <set>

#include "tests/dbus/dbus_fixture.h"

namespace llmd::test {
namespace {

// A uid with a passwd entry: dbus-daemon refuses connections of uids it cannot look up.
constexpr uid_t kNobody = 65534;

using DbusIdentity = LlmdOnBus;

// Runs fn as nobody in a child (real credentials, its own bus connection); its exit code, where
// each failed check returns its own number.
int as_nobody(const std::function<int()>& fn) { return wait_child(spawn_as(kNobody, kNobody, fn)); }

TEST_F(DbusIdentity, AnotherUidCannotSeeOrTouchRootsSessionsAndKeepsItsOwn) {
  BusClient root(address());
  Reply created = root.call("CreateSession", "ss", "Root's secrets.", "");
  ASSERT_TRUE(created.ok()) << created.error();
  const std::string id = created.str();
  // Long enough to be running while nobody tries to cancel it (its first call), short enough to
  // wait for.
  auto long_turn = greedy(400);
  long_turn["ignore_eos"] = true;
  Reply running = root.generate("", "Go on", long_turn);
  ASSERT_TRUE(running.ok()) << running.error();
  const std::string request = running.str();
  const std::string addr = address();

  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const int nobody = as_nobody([&] {
    BusClient c(addr);
    if (!c.connected()) return 1;
    const std::string not_found = "org.llmd.LLM1.Error.NotFound";
    // Root's running request cannot be cancelled; root's session is not there for nobody: not
    // listed, not deletable, no turns.
    if (c.call("Cancel", "o", request.c_str()).error_name != not_found) return 5;
    Reply list = c.call("ListSessions");
    if (!list.ok() || sd_bus_message_enter_container(list.msg, 'a', "a{sv}") < 0 || !read_dict(list.msg).empty()) return 2;
    if (c.call("DeleteSession", "s", id.c_str()).error_name != not_found) return 3;
    if (c.generate(id, "Tell me", greedy(4)).error_name != not_found) return 4;
    // Its status is its own.
    Reply st = c.call("GetStatus");
    if (!st.ok()) return 6;
    const auto status = nlohmann::json::parse(st.str());
    if (status["caller"]["uid"] != kNobody || status["caller"]["admin"] != false) return 7;
    // Its own session is its own.
    Reply mine = c.call("CreateSession", "ss", "", "");
    if (!mine.ok()) return 8;
    const std::string mine_id = mine.str();
    if (::write(p[1], mine_id.data(), mine_id.size()) != static_cast<ssize_t>(mine_id.size())) return 9;
    const Answer a = c.generate_all(mine_id, "Hello", greedy(6));
    if (a.signals.empty() || a.signals.back() != "Finished" || a.text.empty()) return 10;
    if (c.request_signals() != a.signals.size()) return 13;  // none of root's answer came here
    Reply again = c.call("ListSessions");
    if (!again.ok() || sd_bus_message_enter_container(again.msg, 'a', "a{sv}") < 0) return 11;
    const auto only = read_dict(again.msg);
    if (only["id"]["value"] != mine_id || only["uid"]["value"] != kNobody || !read_dict(again.msg).empty()) return 12;
    return 0;
  });
  ::close(p[1]);
  EXPECT_EQ(nobody, 0) << "the check that failed returned " << nobody;
  char buf[64] = {};
  ASSERT_GT(::read(p[0], buf, sizeof buf - 1), 0);
  ::close(p[0]);
  const std::string nobodys = buf;

  // Root's request went on to its end (nobody's Cancel did nothing), and its signals came to root
  // only; root (an admin) sees both sessions and may manage nobody's.
  ASSERT_TRUE(root.wait_end(request));
  EXPECT_EQ(root.answer(request).signals.back(), "Finished") << root.answer(request).failed_message;
  EXPECT_EQ(root.answer(request).stats["completion_tokens"], 400);
  Reply all = root.call("ListSessions");
  ASSERT_TRUE(all.ok());
  ASSERT_GE(sd_bus_message_enter_container(all.msg, 'a', "a{sv}"), 0);
  std::set<std::string> ids;
  for (auto d = read_dict(all.msg); !d.empty(); d = read_dict(all.msg)) ids.insert(d["id"]["value"].get<std::string>());
  EXPECT_EQ(ids, (std::set<std::string>{id, nobodys}));
  EXPECT_TRUE(root.call("DeleteSession", "s", nobodys.c_str()).ok());
}

TEST_F(DbusIdentity, OnlyRootOrUserLlmdMayOwnTheName) {
  // The policy file (included in the private bus) lets root and llmd own org.llmd.LLM1; llmd runs
  // as root here and owns it. Another uid may call it but not take it.
  const std::string addr = address();
  const int nobody = as_nobody([&] {
    BusClient c(addr);
    if (!c.connected()) return 1;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    const int r = sd_bus_call_method(c.bus(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                     "RequestName", &error, &reply, "su", kName, 0u);
    const bool denied = r < 0 && sd_bus_error_has_name(&error, SD_BUS_ERROR_ACCESS_DENIED);
    sd_bus_error_free(&error);
    if (reply != nullptr) sd_bus_message_unref(reply);
    if (!denied) return 2;
    return c.call("GetStatus").ok() ? 0 : 3;  // calling is allowed
  });
  EXPECT_EQ(nobody, 0) << "the check that failed returned " << nobody;
}

// CreateSession's app follows the rule of a request's app (valid_client_name), for every caller;
// GetStatus shows another uid nothing of root's slots but their indexes.
TEST_F(DbusIdentity, SessionAppIsCheckedAndStatusHidesOthersSlots) {
  BusClient root(address());
  Reply created = root.call("CreateSession", "ss", "", "");
  ASSERT_TRUE(created.ok()) << created.error();
  const std::string roots = created.str();
  const Answer turn = root.generate_all(roots, "Tell me about the sea.", greedy(6));
  ASSERT_FALSE(turn.signals.empty());
  ASSERT_EQ(turn.signals.back(), "Finished") << turn.failed_message;
  const std::string addr = address();
  const int nobody = as_nobody([&] {
    BusClient c(addr);
    if (!c.connected()) return 1;
    int check = 1;
    for (const std::string& bad : std::vector<std::string>{"bad app/../", "a/b c", std::string(65, 'a')}) {
      ++check;
      Reply r = c.call("CreateSession", "ss", "", bad.c_str());
      if (r.error_name != "org.llmd.LLM1.Error.InvalidArgument" || r.error_message.find("app") == std::string::npos) {
        return check;
      }
    }
    Reply good = c.call("CreateSession", "ss", "", "editor.v2");
    if (!good.ok()) return 10;
    Reply st = c.call("GetStatus");
    if (!st.ok()) return 11;
    const auto status = nlohmann::json::parse(st.str());
    if (status["slots"].size() != status["context"]["slots"].get<std::size_t>()) return 12;
    for (const auto& s : status["slots"]) {
      if (!s["session"].is_null() || s.contains("cells") || s.contains("busy")) return 13;
    }
    return 0;
  });
  EXPECT_EQ(nobody, 0) << "the check that failed returned " << nobody;
  // Root (an admin) sees its session's slot in full.
  Reply st = root.call("GetStatus");
  ASSERT_TRUE(st.ok()) << st.error();
  const auto status = nlohmann::json::parse(st.str());
  int shown = 0;
  for (const auto& s : status["slots"]) shown += s["session"] == roots && s["cells"] > 0 ? 1 : 0;
  EXPECT_EQ(shown, 1) << status["slots"];
}

class DbusOneSlot : public LlmdOnBus {
  std::vector<std::string> args() const override { return {"--slots", "1"}; }
};

// Waits until nothing is in flight; the status JSON then.
nlohmann::json when_idle(BusClient& c) {
  nlohmann::json status;
  c.run_until([&] {
    Reply r = c.call("GetStatus");
    if (!r.ok()) return false;
    status = nlohmann::json::parse(r.str());
    return status["queue"]["in_flight"] == 0;
  });
  return status;
}

TEST_F(DbusOneSlot, ClientThatLeavesTheBusHasItsRequestCancelled) {
  auto options = greedy(1900);
  options["ignore_eos"] = true;
  {
    BusClient leaver(address());
    Reply started = leaver.generate("", "Go on and on", options);
    ASSERT_TRUE(started.ok()) << started.error();
    const std::string path = started.str();
    ASSERT_TRUE(leaver.run_until([&] { return !leaver.answer(path).signals.empty(); }));  // it runs
    leaver.close();  // and its client is gone
  }
  BusClient c(address());
  const auto status = when_idle(c);
  EXPECT_EQ(status["queue"]["in_flight"], 0) << status.dump();
  EXPECT_EQ(status["queue"]["running"], 0) << status.dump();
  EXPECT_LT(status["counters"]["tokens_generated"].get<int>(), 1900) << "the abandoned generation ran to the end";
  sd_bus_error error = SD_BUS_ERROR_NULL;
  std::uint32_t active = 99;
  sd_bus_message* reply = nullptr;
  ASSERT_GE(sd_bus_get_property(c.bus(), kName, kPath, kInterface, "ActiveSessions", &error, &reply, "u"), 0);
  sd_bus_message_read(reply, "u", &active);
  sd_bus_message_unref(reply);
  sd_bus_error_free(&error);
  EXPECT_EQ(active, 0u);
  // The only slot is free again: the daemon keeps serving, on the bus and on the socket.
  const Answer a = c.generate_all("", "Hello", greedy(4));
  ASSERT_FALSE(a.signals.empty());
  EXPECT_EQ(a.signals.back(), "Finished");
  auto body = greedy(4);
  body["prompt"] = "Hello";
  EXPECT_EQ(call(http(), "POST", "/v1/completions", body).status, 200u);

  // busctl leaves the bus right after Generate's reply: its request is cancelled too.
  const auto r = busctl_call(address(), {"Generate", "ssa{sv}", "", "Go on and on", "3", "max_tokens", "u", "1900",
                                         "ignore_eos", "b", "true", "temperature", "d", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto after = when_idle(c);
  EXPECT_EQ(after["queue"]["in_flight"], 0) << after.dump();
  EXPECT_LT(after["counters"]["tokens_generated"].get<int>(), 2 * 1900) << "busctl's generation ran to the end";
}

}  // namespace
}  // namespace llmd::test
