// org.llmd.LLM1 of the real llmd on a private bus, through sd-bus client code: every method, the
// request signals and their order, properties, status, introspection and the named errors.
#include <algorithm>
#include <limits>
#include <set>

#include "tests/dbus/dbus_fixture.h"

namespace llmd::test {
namespace {

using DbusApi = LlmdOnBus;

// The HTTP answer to the same request, for comparison.
nlohmann::json http_chat(const client::HttpClient& c, const std::string& prompt, nlohmann::json body) {
  body["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", prompt}}});
  auto r = call(c, "POST", "/v1/chat/completions", body);
  EXPECT_EQ(r.status, 200u) << r.raw;
  return r.body;
}

// Token* then exactly one of Finished / Failed.
void expect_well_ordered(const Answer& a, const std::string& last) {
  ASSERT_FALSE(a.signals.empty());
  EXPECT_EQ(a.signals.back(), last);
  for (std::size_t i = 0; i + 1 < a.signals.size(); ++i) EXPECT_EQ(a.signals[i], "Token") << "signal " << i;
}

TEST_F(DbusApi, TokensMatchTheHttpAnswerForTheSameSeedAndPrompt) {
  BusClient c(address());
  const std::string prompt = "Tell me about a cat.";
  // Sampled (seeded) and greedy: the same text as /v1/chat/completions, token for token.
  for (const nlohmann::json& options : {nlohmann::json{{"max_tokens", 40}, {"temperature", 0.9}, {"seed", 1234}},
                                        greedy(24)}) {
    const auto expected = http_chat(http(), prompt, options);
    const Answer a = c.generate_all("", prompt, options);
    expect_well_ordered(a, "Finished");
    EXPECT_GT(a.signals.size(), 2u);
    EXPECT_EQ(a.text, expected["choices"][0]["message"]["content"].get<std::string>()) << options.dump();
    EXPECT_EQ(a.finish_reason, expected["choices"][0]["finish_reason"]);
    EXPECT_EQ(a.stats["completion_tokens"], expected["usage"]["completion_tokens"]);
    EXPECT_EQ(a.stats["prompt_tokens"], expected["usage"]["prompt_tokens"]);
    for (const char* key : {"cached_tokens", "loaded_tokens", "restored_tokens", "queue_ms", "ttft_ms", "prefill_ms",
                            "decode_ms", "restore_ms", "seed"}) {
      EXPECT_TRUE(a.stats.contains(key)) << key;
    }
  }
  // raw: plain text completion, as /v1/completions.
  auto body = greedy(16);
  body["prompt"] = "Once upon a time";
  auto expected = call(http(), "POST", "/v1/completions", body);
  ASSERT_EQ(expected.status, 200u) << expected.raw;
  auto options = greedy(16);
  options["raw"] = true;
  const Answer raw = c.generate_all("", "Once upon a time", options);
  expect_well_ordered(raw, "Finished");
  EXPECT_EQ(raw.text, expected.body["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(raw.finish_reason, "length");
  EXPECT_EQ(raw.stats["completion_tokens"], 16);
}

TEST_F(DbusApi, SessionLifecycleAndTurnsMatchTheHttpSession) {
  BusClient c(address());
  Reply created = c.call("CreateSession", "ss", "You tell stories.", "editor");
  ASSERT_TRUE(created.ok()) << created.error();
  const std::string id = created.str();
  EXPECT_EQ(id.rfind("ses_", 0), 0u) << id;
  // The same conversation over HTTP, for comparison.
  auto h = call(http(), "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "You tell stories."}});
  ASSERT_EQ(h.status, 201u);
  const std::string hid = h.body["id"];
  for (const std::string turn : {"Tell me a story.", "What happened next?"}) {
    const Answer a = c.generate_all(id, turn, greedy(20));
    expect_well_ordered(a, "Finished");
    auto body = greedy(20);
    body["content"] = turn;
    body["stream"] = false;
    auto said = call(http(), "POST", "/v1/sessions/" + hid + "/messages", body);
    ASSERT_EQ(said.status, 200u) << said.raw;
    EXPECT_EQ(a.text, said.body["message"]["content"].get<std::string>()) << turn;
  }
  // ListSessions: both sessions (root is an admin), every key with its type.
  Reply list = c.call("ListSessions");
  ASSERT_TRUE(list.ok()) << list.error();
  ASSERT_GE(sd_bus_message_enter_container(list.msg, 'a', "a{sv}"), 0);
  std::map<std::string, nlohmann::json> by_id;
  while (true) {
    const auto d = read_dict(list.msg);
    if (d.empty()) break;
    by_id[d["id"]["value"].get<std::string>()] = d;
  }
  ASSERT_EQ(by_id.size(), 2u);
  const auto& s = by_id[id];
  const std::map<std::string, std::string> types = {
      {"id", "s"},         {"uid", "u"},        {"app", "s"},    {"system_prompt", "s"}, {"created_ms", "x"},
      {"updated_ms", "x"}, {"tokens", "u"},     {"messages", "u"}, {"busy", "b"},        {"resident", "b"}};
  for (const auto& [key, sig] : types) EXPECT_EQ(s[key]["sig"], sig) << key;
  EXPECT_EQ(s["uid"]["value"], 0);
  EXPECT_EQ(s["app"]["value"], "editor");
  EXPECT_EQ(s["system_prompt"]["value"], "You tell stories.");
  EXPECT_EQ(s["messages"]["value"], 5);  // system + two turns
  EXPECT_GT(s["tokens"]["value"].get<int>(), 40);
  EXPECT_EQ(s["busy"]["value"], false);
  EXPECT_GE(s["updated_ms"]["value"].get<std::int64_t>(), s["created_ms"]["value"].get<std::int64_t>());
  // The HTTP API sees the D-Bus session, the same one.
  EXPECT_EQ(call(http(), "GET", "/v1/sessions/" + id).body["messages"].size(), 5u);
  // "" is no system prompt.
  Reply bare = c.call("CreateSession", "ss", "", "");
  ASSERT_TRUE(bare.ok()) << bare.error();
  EXPECT_TRUE(call(http(), "GET", "/v1/sessions/" + bare.str()).body["system_prompt"].is_null());

  Reply deleted = c.call("DeleteSession", "s", id.c_str());
  EXPECT_TRUE(deleted.ok()) << deleted.error();
  EXPECT_EQ(call(http(), "GET", "/v1/sessions/" + id).status, 404u);
  Reply again = c.call("DeleteSession", "s", id.c_str());
  EXPECT_EQ(again.error_name, "org.llmd.LLM1.Error.NotFound");
  EXPECT_NE(again.error_message.find(id), std::string::npos) << again.error_message;
}

TEST_F(DbusApi, SignalsGoOnlyToTheCaller) {
  BusClient caller(address());
  BusClient other(address());  // root too, listening to every Request signal it may receive
  const Answer a = caller.generate_all("", "Hello there", greedy(12));
  expect_well_ordered(a, "Finished");
  // Give the other connection every chance to receive something.
  Reply ping = other.call("GetStatus");
  ASSERT_TRUE(ping.ok());
  other.run_until([] { return false; }, std::chrono::seconds(1));
  EXPECT_EQ(other.request_signals(), 0u) << "another connection received the answer";
}

TEST_F(DbusApi, CancelEndsTheRequestWithFailedAndOnlyTheOwnerMayCancel) {
  BusClient c(address());
  auto options = greedy(1900);
  options["ignore_eos"] = true;
  Reply started = c.generate("", "Go on and on", options);
  ASSERT_TRUE(started.ok()) << started.error();
  const std::string path = started.str();
  EXPECT_EQ(path.rfind("/org/llmd/LLM1/request/", 0), 0u) << path;
  ASSERT_TRUE(c.run_until([&] { return !c.answer(path).signals.empty(); }));  // it runs
  Reply cancelled = c.call("Cancel", "o", path.c_str());
  EXPECT_TRUE(cancelled.ok()) << cancelled.error();
  ASSERT_TRUE(c.wait_end(path));
  const Answer& a = c.answer(path);
  expect_well_ordered(a, "Failed");
  EXPECT_EQ(a.failed_name, "org.llmd.LLM1.Error.Cancelled");
  EXPECT_FALSE(a.failed_message.empty());
  EXPECT_LT(std::count(a.signals.begin(), a.signals.end(), "Token"), 1900);
  // Gone now: cancelling it again, or a request that never was, is NotFound.
  EXPECT_EQ(c.call("Cancel", "o", path.c_str()).error_name, "org.llmd.LLM1.Error.NotFound");
  EXPECT_EQ(c.call("Cancel", "o", "/org/llmd/LLM1/request/999999").error_name, "org.llmd.LLM1.Error.NotFound");
  EXPECT_EQ(c.call("Cancel", "o", "/org/llmd").error_name, "org.llmd.LLM1.Error.NotFound");
  // The daemon goes on serving.
  expect_well_ordered(c.generate_all("", "Hi", greedy(4)), "Finished");
}

TEST_F(DbusApi, RejectionsAreTheGenerateCallsNamedErrors) {
  BusClient c(address());
  auto expect_error = [&](const std::string& session, const nlohmann::json& options, const std::string& name,
                          const std::string& says) {
    const std::size_t signals = c.request_signals();
    Reply r = c.generate(session, "Hello", options);
    EXPECT_EQ(r.error_name, name) << options.dump() << " -> " << r.error();
    EXPECT_NE(r.error_message.find(says), std::string::npos) << options.dump() << " -> " << r.error();
    c.run_until([] { return false; }, std::chrono::seconds(0));
    EXPECT_EQ(c.request_signals(), signals) << "a rejected request sent signals";
  };
  const std::string bad = "org.llmd.LLM1.Error.InvalidArgument";
  // Wrong types and values name the option.
  expect_error("", {{"max_tokens", "ten"}}, bad, "max_tokens");
  expect_error("", {{"max_tokens", 0}}, bad, "max_tokens");
  expect_error("", {{"max_tokens", {{"sig", "u"}, {"value", 100000}}}}, bad, "max_tokens");
  expect_error("", {{"temperature", nlohmann::json::array({"hot"})}}, bad, "temperature");
  expect_error("", {{"temperature", "warm"}}, bad, "temperature");
  expect_error("", {{"top_p", 0.0}}, bad, "top_p");
  expect_error("", {{"seed", -1}}, bad, "seed");
  expect_error("", {{"stop", {{"sig", "i"}, {"value", 3}}}}, bad, "stop");
  expect_error("", {{"stop", {{"sig", "ai"}, {"value", {1, 2}}}}}, bad, "stop");
  expect_error("", {{"priority", "urgent"}}, bad, "priority");
  expect_error("", {{"app", "no spaces allowed"}}, bad, "app");
  expect_error("", {{"raw", "yes"}}, bad, "raw");
  expect_error("", {{"max_token", 5}}, bad, "unknown option max_token");
  // Numbers no field can take: out of range, not integral, not finite; never UB or a crash.
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const nlohmann::json& v :
       {nlohmann::json{{"sig", "d"}, {"value", 1e300}}, nlohmann::json{{"sig", "d"}, {"value", -1e300}},
        nlohmann::json{{"sig", "d"}, {"value", 1.5}}, nlohmann::json{{"sig", "d"}, {"value", inf}},
        nlohmann::json{{"sig", "d"}, {"value", nan}},
        nlohmann::json{{"sig", "t"}, {"value", std::numeric_limits<std::uint64_t>::max()}},
        nlohmann::json{{"sig", "x"}, {"value", std::numeric_limits<std::int64_t>::min()}},
        nlohmann::json{{"sig", "x"}, {"value", std::numeric_limits<std::int64_t>::max()}}}) {
    for (const char* key : {"max_tokens", "seed", "top_k"}) expect_error("", {{key, v}}, bad, key);
  }
  for (const double v : {inf, -inf, nan, 1e300}) {
    for (const char* key : {"temperature", "top_p", "min_p", "repeat_penalty"}) {
      expect_error("", {{key, {{"sig", "d"}, {"value", v}}}}, bad, key);
    }
  }
  // Every integer type is an integer.
  for (const char* sig : {"y", "n", "q", "i", "u", "x", "t"}) {
    Reply ok = c.generate("", "Hi", {{"max_tokens", {{"sig", sig}, {"value", 2}}}, {"temperature", 0}});
    EXPECT_TRUE(ok.ok()) << sig << ": " << ok.error();
    if (ok.ok()) {
      EXPECT_TRUE(c.wait_end(ok.str()));
    }
  }
  // Sessions.
  expect_error("ses_doesnotexist", {}, "org.llmd.LLM1.Error.NotFound", "ses_doesnotexist");
  Reply created = c.call("CreateSession", "ss", "", "");
  ASSERT_TRUE(created.ok());
  const std::string id = created.str();
  expect_error(id, {{"raw", true}}, bad, "raw");
  // Busy: a turn runs on the session.
  auto long_turn = greedy(1900);
  long_turn["ignore_eos"] = true;
  Reply running = c.generate(id, "Go on", long_turn);
  ASSERT_TRUE(running.ok()) << running.error();
  Reply busy = c.generate(id, "Me too", greedy(4));
  EXPECT_EQ(busy.error_name, "org.llmd.LLM1.Error.Busy") << busy.error();
  Reply busy_delete = c.call("DeleteSession", "s", id.c_str());
  EXPECT_EQ(busy_delete.error_name, "org.llmd.LLM1.Error.Busy") << busy_delete.error();
  EXPECT_TRUE(c.call("Cancel", "o", running.str().c_str()).ok());
  EXPECT_TRUE(c.wait_end(running.str()));
  // A prompt longer than the context.
  std::string huge;
  for (int i = 0; i < 3000; ++i) huge += "word ";
  Reply too_long = c.generate("", huge, greedy(4));
  EXPECT_EQ(too_long.error_name, bad) << too_long.error();
  EXPECT_NE(too_long.error_message.find("context"), std::string::npos) << too_long.error();
  // A wrong signature is sd-bus's own InvalidArgs.
  Reply wrong = c.call("Generate", "ss", "", "Hi");
  EXPECT_EQ(wrong.error_name, "org.freedesktop.DBus.Error.InvalidArgs") << wrong.error();
}

class DbusQuotas : public LlmdOnBus {
  std::vector<std::string> args() const override { return {"--max-sessions-per-user", "1", "--max-prompt-tokens", "8"}; }
};

TEST_F(DbusQuotas, OverALimitIsQuotaExceededNamingTheKey) {
  BusClient c(address());
  ASSERT_TRUE(c.call("CreateSession", "ss", "", "").ok());
  Reply second = c.call("CreateSession", "ss", "", "");
  EXPECT_EQ(second.error_name, "org.llmd.LLM1.Error.QuotaExceeded") << second.error();
  EXPECT_NE(second.error_message.find("(limit max-sessions-per-user = 1)"), std::string::npos) << second.error();
  Reply long_prompt = c.generate("", "a long prompt of many more than eight tokens, surely", greedy(4));
  EXPECT_EQ(long_prompt.error_name, "org.llmd.LLM1.Error.QuotaExceeded") << long_prompt.error();
  EXPECT_NE(long_prompt.error_message.find("(limit max-prompt-tokens = 8)"), std::string::npos) << long_prompt.error();
}

// A session created with an overflow policy outlives a 256-token context: the turn whose window
// moved signals WindowMoved before its first Token, and Finished's stats say the same.
class DbusWindow : public LlmdOnBus {
  std::vector<std::string> args() const override { return {"--ctx", "256", "--slots", "1"}; }
};

TEST_F(DbusWindow, WindowMovedComesBeforeTheTextAndInTheStats) {
  BusClient c(address());
  Reply bad = c.call("CreateSessionWithOptions", "ssa{sv}", "", "", 1, "overflow", "s", "truncate");
  EXPECT_EQ(bad.error_name, "org.llmd.LLM1.Error.InvalidArgument") << bad.error();
  Reply created = c.call("CreateSessionWithOptions", "ssa{sv}", "You tell stories.", "", 1, "overflow", "s", "drop_oldest");
  ASSERT_TRUE(created.ok()) << created.error();
  const std::string id = created.str();
  EXPECT_EQ(call(http(), "GET", "/v1/sessions/" + id).body["window"]["overflow"], "drop_oldest");
  bool moved = false;
  for (int i = 0; i < 20 && !moved; ++i) {
    const Answer a = c.generate_all(id, "Tell me about the number " + std::to_string(i) + ".", greedy(24));
    ASSERT_FALSE(a.signals.empty());
    ASSERT_EQ(a.signals.back(), "Finished") << i;
    moved = a.stats.value("window_moved", false);
    if (moved) {
      EXPECT_EQ(a.signals.front(), "WindowMoved");
      EXPECT_GT(a.stats["window_dropped_messages"].get<int>(), 0);
      EXPECT_GT(a.stats["window_dropped_tokens"].get<int>(), 0);
    } else {
      EXPECT_EQ(std::count(a.signals.begin(), a.signals.end(), "WindowMoved"), 0);
    }
  }
  EXPECT_TRUE(moved);
}

TEST_F(DbusApi, PropertiesAndActiveSessionsChanges) {
  BusClient c(address());
  auto get = [&](const char* name, const char* type) {
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    nlohmann::json v;
    const int r = sd_bus_get_property(c.bus(), kName, kPath, kInterface, name, &error, &reply, type);
    EXPECT_GE(r, 0) << name << ": " << (error.message != nullptr ? error.message : "");
    if (r >= 0) {
      if (type[0] == 's') {
        const char* s = nullptr;
        sd_bus_message_read(reply, "s", &s);
        v = std::string(s);
      } else {
        std::uint32_t u = 0;
        sd_bus_message_read(reply, "u", &u);
        v = u;
      }
      sd_bus_message_unref(reply);
    }
    sd_bus_error_free(&error);
    return v;
  };
  const auto status = call(http(), "GET", "/v1/status").body;
  EXPECT_EQ(get("Model", "s"), status["model"]["id"]);
  EXPECT_EQ(get("Version", "s"), status["version"]);
  EXPECT_EQ(get("Slots", "u"), status["context"]["slots"]);  // 16 by default
  EXPECT_EQ(get("ActiveSessions", "u"), 0);
  // ActiveSessions counts turns in flight and says when it changes.
  auto options = greedy(1900);
  options["ignore_eos"] = true;
  Reply started = c.generate("", "Go on", options);
  ASSERT_TRUE(started.ok()) << started.error();
  ASSERT_TRUE(c.run_until([&] { return !c.answer(started.str()).signals.empty(); }));
  EXPECT_EQ(get("ActiveSessions", "u"), 1);
  ASSERT_TRUE(c.call("Cancel", "o", started.str().c_str()).ok());
  ASSERT_TRUE(c.wait_end(started.str()));
  ASSERT_TRUE(c.run_until([&] { return !c.active_changes().empty() && c.active_changes().back() == 0; }))
      << "no PropertiesChanged to 0";
  EXPECT_EQ(c.active_changes().front(), 1u);
  EXPECT_EQ(get("ActiveSessions", "u"), 0);
  // Properties are read-only.
  sd_bus_error error = SD_BUS_ERROR_NULL;
  EXPECT_LT(sd_bus_set_property(c.bus(), kName, kPath, kInterface, "Slots", &error, "u", 9u), 0);
  sd_bus_error_free(&error);
}

TEST_F(DbusApi, GetStatusIsTheHttpStatusForThisCaller) {
  BusClient c(address());
  Reply r = c.call("GetStatus");
  ASSERT_TRUE(r.ok()) << r.error();
  const auto bus = nlohmann::json::parse(r.str());
  const auto sock = call(http(), "GET", "/v1/status").body;
  std::set<std::string> bus_keys, sock_keys;
  for (const auto& [k, v] : bus.items()) bus_keys.insert(k);
  for (const auto& [k, v] : sock.items()) sock_keys.insert(k);
  EXPECT_EQ(bus_keys, sock_keys);
  for (const char* same : {"version", "model", "context", "limits", "caller", "sessions"}) {
    EXPECT_EQ(bus[same], sock[same]) << same;
  }
  EXPECT_EQ(bus["caller"]["uid"], 0);
  EXPECT_TRUE(bus["caller"]["admin"].get<bool>());
}

TEST_F(DbusApi, IntrospectionNamesArgumentsAndShowsRunningRequests) {
  BusClient c(address());
  auto introspect = [&](const std::string& path) {
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    std::string xml;
    if (sd_bus_call_method(c.bus(), kName, path.c_str(), "org.freedesktop.DBus.Introspectable", "Introspect", &error,
                           &reply, nullptr) >= 0) {
      const char* s = nullptr;
      sd_bus_message_read(reply, "s", &s);
      xml = s;
      sd_bus_message_unref(reply);
    }
    sd_bus_error_free(&error);
    return xml;
  };
  const std::string xml = introspect(kPath);
  for (const char* want :
       {R"(<interface name="org.llmd.LLM1">)", R"(<method name="CreateSession">)",
        R"(<arg type="s" name="system_prompt" direction="in"/>)", R"(<arg type="s" name="app" direction="in"/>)",
        R"(<arg type="s" name="id" direction="out"/>)", R"(<method name="DeleteSession">)",
        R"(<method name="ListSessions">)", R"(<arg type="aa{sv}" name="sessions" direction="out"/>)",
        R"(<method name="Generate">)", R"(<arg type="s" name="session" direction="in"/>)",
        R"(<arg type="s" name="prompt" direction="in"/>)", R"(<arg type="a{sv}" name="options" direction="in"/>)",
        R"(<arg type="o" name="request" direction="out"/>)", R"(<method name="Cancel">)",
        R"(<arg type="o" name="request" direction="in"/>)", R"(<method name="GetStatus">)",
        R"(<arg type="s" name="json" direction="out"/>)", R"(<property name="Model" type="s" access="read">)",
        R"(<property name="Version" type="s" access="read">)", R"(<property name="Slots" type="u" access="read">)",
        R"(<property name="ActiveSessions" type="u" access="read">)"}) {
    EXPECT_NE(xml.find(want), std::string::npos) << want << "\n" << xml;
  }
  EXPECT_NE(xml.find(R"(<annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>)"),
            std::string::npos)
      << xml;
  auto options = greedy(1900);
  options["ignore_eos"] = true;
  Reply started = c.generate("", "Go on", options);
  ASSERT_TRUE(started.ok()) << started.error();
  const std::string path = started.str();
  const std::string req = introspect(path);
  for (const char* want :
       {R"(<interface name="org.llmd.LLM1.Request">)", R"(<signal name="Token">)", R"(<arg type="s" name="text"/>)",
        R"(<signal name="Finished">)", R"(<arg type="s" name="finish_reason"/>)", R"(<arg type="a{sv}" name="stats"/>)",
        R"(<signal name="Failed">)", R"(<arg type="s" name="error_name"/>)", R"(<arg type="s" name="message"/>)"}) {
    EXPECT_NE(req.find(want), std::string::npos) << want << "\n" << req;
  }
  ASSERT_TRUE(c.call("Cancel", "o", path.c_str()).ok());
  ASSERT_TRUE(c.wait_end(path));
  EXPECT_EQ(introspect(path).find("org.llmd.LLM1.Request"), std::string::npos) << "the request object outlived it";
}

}  // namespace
}  // namespace llmd::test
