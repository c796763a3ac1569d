// ForkSession, RewindSession and PrewarmSession of the real llmd on a private bus: the same sessions, rules and
// errors as the HTTP API's fork and rewind, and a rewind then the same message gives the first
// answer again (greedy, flash attention off).
#include <unistd.h>

#include "tests/dbus/dbus_fixture.h"

namespace llmd::test {
namespace {

class DbusFork : public LlmdOnBus {
  std::vector<std::string> args() const override { return {"--flash-attn", "off", "--slots", "2"}; }
};

// RewindSession with one option of D-Bus type `sig`.
Reply rewind(BusClient& c, const std::string& id, const char* key, const char* sig, std::uint32_t value) {
  if (std::string(sig) == "s") return c.call("RewindSession", "sa{sv}", id.c_str(), 1, key, "s", "2");
  return c.call("RewindSession", "sa{sv}", id.c_str(), 1, key, sig, value);
}

TEST_F(DbusFork, ForkAndRewindFollowTheHttpApi) {
  BusClient c(address());
  Reply created = c.call("CreateSession", "ss", "You tell stories.", "editor");
  ASSERT_TRUE(created.ok()) << created.error();
  const std::string id = created.str();
  std::vector<std::string> answers;
  for (const std::string turn : {"Tell me a story.", "What happened next?"}) {
    const Answer a = c.generate_all(id, turn, greedy(12));
    ASSERT_EQ(a.signals.back(), "Finished");
    answers.push_back(a.text);
  }
  const auto before = call(http(), "GET", "/v1/sessions/" + id).body;

  // ForkSession: a new session with the same messages, the caller's.
  Reply forked = c.call("ForkSession", "s", id.c_str());
  ASSERT_TRUE(forked.ok()) << forked.error();
  const std::string fork = forked.str();
  EXPECT_NE(fork, id);
  const auto f = call(http(), "GET", "/v1/sessions/" + fork).body;
  EXPECT_EQ(f["messages"], before["messages"]);
  EXPECT_EQ(f["n_tokens"], before["n_tokens"]);
  EXPECT_EQ(f["app"], "editor");
  EXPECT_EQ(f["owner_uid"], 0);

  // RewindSession: drop the last turn; it answers the messages and tokens left.
  Reply cut = c.call("RewindSession", "sa{sv}", fork.c_str(), 1, "drop_last", "u", 2u);
  ASSERT_TRUE(cut.ok()) << cut.error();
  std::uint32_t messages = 0, tokens = 0;
  ASSERT_GE(sd_bus_message_read(cut.msg, "uu", &messages, &tokens), 0);
  EXPECT_EQ(messages, 3u);
  EXPECT_GT(tokens, 0u);
  EXPECT_LT(tokens, before["n_tokens"].get<std::uint32_t>());
  // The same message again: the same answer.
  const Answer again = c.generate_all(fork, "What happened next?", greedy(12));
  EXPECT_EQ(again.text, answers[1]);
  // keep, as any integer type.
  Reply kept = rewind(c, fork, "keep", "x", 1);
  ASSERT_TRUE(kept.ok()) << kept.error();
  ASSERT_GE(sd_bus_message_read(kept.msg, "uu", &messages, &tokens), 0);
  EXPECT_EQ(messages, 1u);
  EXPECT_EQ(tokens, 0u);
  // The original is untouched.
  EXPECT_EQ(call(http(), "GET", "/v1/sessions/" + id).body["messages"], before["messages"]);

  // Errors: the HTTP API's, by name.
  const std::string bad = "org.llmd.LLM1.Error.InvalidArgument";
  for (const auto& [key, sig, value, names] :
       std::vector<std::tuple<const char*, const char*, std::uint32_t, const char*>>{
           {"drop_last", "u", 0, "drop_last"},     // nothing dropped
           {"drop_last", "u", 1, "drop_last"},     // half a turn
           {"drop_last", "s", 0, "drop_last"},     // not an integer
           {"keep", "u", 5, "keep"},               // drops nothing
           {"keep", "u", 0, "keep"},               // the system message stays
           {"dry_run", "b", 1, "dry_run"}}) {       // unknown
    Reply r = std::string(sig) == "b" ? c.call("RewindSession", "sa{sv}", id.c_str(), 1, key, "b", 1)
                                      : rewind(c, id, key, sig, value);
    EXPECT_EQ(r.error_name, bad) << key << " " << sig << " " << value << ": " << r.error();
    EXPECT_NE(r.error_message.find(names), std::string::npos) << r.error();
  }
  Reply neither = c.call("RewindSession", "sa{sv}", id.c_str(), 0);
  EXPECT_EQ(neither.error_name, bad) << neither.error();
  Reply both = c.call("RewindSession", "sa{sv}", id.c_str(), 2, "drop_last", "u", 2u, "keep", "u", 1u);
  EXPECT_EQ(both.error_name, bad) << both.error();
  EXPECT_EQ(c.call("ForkSession", "s", "ses_doesnotexist").error_name, "org.llmd.LLM1.Error.NotFound");
  EXPECT_EQ(rewind(c, "ses_doesnotexist", "drop_last", "u", 2).error_name, "org.llmd.LLM1.Error.NotFound");
  EXPECT_EQ(call(http(), "GET", "/v1/sessions/" + id).body["messages"], before["messages"]);

  // Busy while a turn runs on it.
  auto long_turn = greedy(1900);
  long_turn["ignore_eos"] = true;
  Reply running = c.generate(id, "Go on", long_turn);
  ASSERT_TRUE(running.ok()) << running.error();
  EXPECT_EQ(c.call("ForkSession", "s", id.c_str()).error_name, "org.llmd.LLM1.Error.Busy");
  EXPECT_EQ(rewind(c, id, "drop_last", "u", 2).error_name, "org.llmd.LLM1.Error.Busy");
  EXPECT_TRUE(c.call("Cancel", "o", running.str().c_str()).ok());
  EXPECT_TRUE(c.wait_end(running.str()));
}

// Another uid can neither fork nor rewind root's session (it does not exist for them), and forks
// its own as its own.
TEST_F(DbusFork, AnotherUidCannotForkOrRewindASession) {
  BusClient root(address());
  Reply created = root.call("CreateSession", "ss", "Root's secrets.", "");
  ASSERT_TRUE(created.ok()) << created.error();
  const std::string id = created.str();
  ASSERT_EQ(root.generate_all(id, "Hello", greedy(4)).signals.back(), "Finished");
  const std::string addr = address();
  constexpr uid_t kNobody = 65534;
  const int nobody = wait_child(spawn_as(kNobody, kNobody, [&] {
    BusClient c(addr);
    if (!c.connected()) return 1;
    const std::string not_found = "org.llmd.LLM1.Error.NotFound";
    if (c.call("ForkSession", "s", id.c_str()).error_name != not_found) return 2;
    if (c.call("RewindSession", "sa{sv}", id.c_str(), 1, "drop_last", "u", 2u).error_name != not_found) return 3;
    Reply mine = c.call("CreateSession", "ss", "", "");
    if (!mine.ok()) return 4;
    Reply forked = c.call("ForkSession", "s", mine.str().c_str());
    if (!forked.ok()) return 5;
    return 0;
  }));
  EXPECT_EQ(nobody, 0) << "the check that failed returned " << nobody;
  const auto s = call(http(), "GET", "/v1/sessions/" + id).body;
  EXPECT_EQ(s["n_messages"], 3);
  // Root (an admin) sees nobody's two sessions, both nobody's.
  const auto all = call(http(), "GET", "/v1/sessions").body["data"];
  int nobodys = 0;
  for (const auto& x : all) nobodys += x["owner_uid"] == kNobody ? 1 : 0;
  EXPECT_EQ(nobodys, 2) << all.dump();
}

class DbusForkQuota : public LlmdOnBus {
  std::vector<std::string> args() const override { return {"--max-sessions-per-user", "1"}; }
};

TEST_F(DbusForkQuota, AForkCountsAsASession) {
  BusClient c(address());
  Reply created = c.call("CreateSession", "ss", "", "");
  ASSERT_TRUE(created.ok()) << created.error();
  Reply forked = c.call("ForkSession", "s", created.str().c_str());
  EXPECT_EQ(forked.error_name, "org.llmd.LLM1.Error.QuotaExceeded") << forked.error();
  EXPECT_NE(forked.error_message.find("(limit max-sessions-per-user = 1)"), std::string::npos) << forked.error();
}

// PrewarmSession: a session out of the only slot comes back before its next message; the reply
// says how (the HTTP API's prewarm, by the same Service call).
class DbusPrewarm : public LlmdOnBus {
  std::vector<std::string> args() const override { return {"--slots", "1"}; }
};

TEST_F(DbusPrewarm, PrewarmBringsTheSessionBack) {
  BusClient c(address());
  Reply a = c.call("CreateSession", "ss", "You tell stories.", "");
  Reply b = c.call("CreateSession", "ss", "You tell stories.", "");
  ASSERT_TRUE(a.ok() && b.ok()) << a.error() << b.error();
  ASSERT_EQ(c.generate_all(a.str(), "Tell me a story about a dog.", greedy(8)).signals.back(), "Finished");
  ASSERT_EQ(c.generate_all(b.str(), "Tell me a story about a cat.", greedy(8)).signals.back(), "Finished");
  Reply warm = c.call("PrewarmSession", "s", a.str().c_str());
  ASSERT_TRUE(warm.ok()) << warm.error();
  std::uint32_t tokens = 0, resident = 1, loaded = 0, restored = 0;
  ASSERT_GE(sd_bus_message_read(warm.msg, "uuuu", &tokens, &resident, &loaded, &restored), 0);
  EXPECT_EQ(tokens, call(http(), "GET", "/v1/sessions/" + a.str()).body.value("n_tokens", 0u));
  EXPECT_EQ(resident, 0u);
  EXPECT_GT(loaded + restored, 0u);
  EXPECT_EQ(c.call("PrewarmSession", "s", "ses_000000000000000000000000").error_name, "org.llmd.LLM1.Error.NotFound");
}

}  // namespace
}  // namespace llmd::test
