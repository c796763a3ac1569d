// Fork and rewind of sessions against the real daemon and model (greedy; flash attention off, so
// that where a sequence's cells lie in the KV pool does not change its values: ARCHITECTURE.md,
// "Exactness"). The references are built honestly: a session that takes the same turns one by
// one, as the original would have, never a fork or a rewind.
// - a fork continues exactly as its original would, both branches then go their own ways, and
//   deleting the original (even before the fork's first turn) keeps the fork exact;
// - a rewind then the same message gives the same answer as the first time, with the slot and
//   the chunk store cut to the kept tokens;
// - ownership, limits, busy sessions and bad bodies.
#include <chrono>
#include <thread>

#include "tests/e2e/kv_audit_util.h"

namespace llmd::test {
namespace {

DaemonOptions exact(std::vector<std::string> more = {}, const std::string& slots = "2") {
  DaemonOptions o;
  o.args = {"--flash-attn", "off", "--slots", slots, "--chunk-tokens", "16"};
  o.args.insert(o.args.end(), more.begin(), more.end());
  return o;
}

const char* kSystem = "You tell stories.";
const std::vector<std::string> kTurns = {"Tell me a story.", "What happened next?", "How did it end?"};

std::string new_session(const client::HttpClient& c) {
  auto r = call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", kSystem}});
  EXPECT_EQ(r.status, 201u) << r.raw;
  return r.body.value("id", "");
}

std::string say(const client::HttpClient& c, const std::string& id, const std::string& text) {
  auto body = greedy_body(12);
  body["content"] = text;
  body["stream"] = false;
  auto r = call(c, "POST", "/v1/sessions/" + id + "/messages", body);
  EXPECT_EQ(r.status, 200u) << r.raw;
  return r.status == 200 ? r.body["message"]["content"].get<std::string>() : "";
}

nlohmann::json show(const client::HttpClient& c, const std::string& id) {
  auto r = call(c, "GET", "/v1/sessions/" + id);
  EXPECT_EQ(r.status, 200u) << r.raw;
  return r.body;
}

std::string fork_of(const client::HttpClient& c, const std::string& id) {
  auto r = call(c, "POST", "/v1/sessions/" + id + "/fork");
  EXPECT_EQ(r.status, 201u) << r.raw;
  return r.body.value("id", "");
}

JsonReply rewind(const client::HttpClient& c, const std::string& id, const nlohmann::json& how) {
  return call(c, "POST", "/v1/sessions/" + id + "/rewind", how);
}

// The answers a session that takes `turns` one by one gives (the honest reference).
std::vector<std::string> taken_one_by_one(const client::HttpClient& c, const std::vector<std::string>& turns) {
  const std::string id = new_session(c);
  std::vector<std::string> out;
  for (const auto& t : turns) out.push_back(say(c, id, t));
  return out;
}

// The cells of the session's slot, once the engine has applied what it was told (0: none).
std::uint32_t slot_cells(const client::HttpClient& c, const std::string& id, std::uint32_t expect) {
  std::uint32_t cells = 0;
  for (int i = 0; i < 200; ++i) {
    cells = 0;
    const auto status = call(c, "GET", "/v1/status");
    for (const auto& s : status.body["slots"]) {
      if (s["session"].is_string() && s["session"] == id) cells = s["cells"].get<std::uint32_t>();
    }
    if (cells == expect) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cells;
}

TEST(Fork, BothBranchesContinueAsTheOriginalWould) {
  DaemonProcess d(scratch_dir(), exact());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string a = new_session(c);
  for (int i = 0; i < 2; ++i) say(c, a, kTurns[i]);

  const std::string b = fork_of(c, a);
  ASSERT_FALSE(b.empty());
  EXPECT_NE(b, a);
  EXPECT_EQ(b.rfind("ses_", 0), 0u);
  const auto sa = show(c, a), sb = show(c, b);
  EXPECT_EQ(sb["owner_uid"], 0);
  EXPECT_EQ(sb["system_prompt"], kSystem);
  EXPECT_EQ(sb["app"], sa["app"]);
  EXPECT_EQ(sb["n_tokens"], sa["n_tokens"]);
  EXPECT_EQ(sb["n_messages"], 5);
  EXPECT_FALSE(sb["resident"].get<bool>());  // no KV was copied
  ASSERT_EQ(sb["messages"].size(), sa["messages"].size());
  for (std::size_t i = 0; i < sa["messages"].size(); ++i) {
    EXPECT_EQ(sb["messages"][i]["role"], sa["messages"][i]["role"]);
    EXPECT_EQ(sb["messages"][i]["content"], sa["messages"][i]["content"]);
  }

  // Both continue exactly as the original would have.
  const auto ref = taken_one_by_one(c, {kTurns[0], kTurns[1], kTurns[2], "Who was there?"});
  EXPECT_EQ(say(c, b, kTurns[2]), ref[2]);
  EXPECT_EQ(say(c, a, kTurns[2]), ref[2]);
  // And go their own ways: each branch answers as a session that took its turns one by one.
  const auto ref_b = taken_one_by_one(c, {kTurns[0], kTurns[1], kTurns[2], "Where did they go?"});
  EXPECT_EQ(say(c, a, "Who was there?"), ref[3]);
  EXPECT_EQ(say(c, b, "Where did they go?"), ref_b[3]);
  const auto ma = show(c, a)["messages"], mb = show(c, b)["messages"];
  ASSERT_EQ(ma.size(), 9u);
  ASSERT_EQ(mb.size(), 9u);
  EXPECT_EQ(ma[7]["content"], "Who was there?");
  EXPECT_EQ(mb[7]["content"], "Where did they go?");
  expect_kv_right(c, a);
  expect_kv_right(c, b);
}

TEST(Fork, DeletingTheOriginalKeepsTheForkExact) {
  const std::string dir = scratch_dir();
  std::string b;
  std::vector<std::string> ref;
  {
    DaemonProcess d(dir, exact());
    ASSERT_TRUE(d.start()) << d.log();
    const auto c = d.client();
    const std::string a = new_session(c);
    for (int i = 0; i < 2; ++i) say(c, a, kTurns[i]);
    b = fork_of(c, a);
    // Gone before the fork's first turn: nothing the fork needs goes with it.
    ASSERT_EQ(call(c, "DELETE", "/v1/sessions/" + a).status, 200u);
    ref = taken_one_by_one(c, {kTurns[0], kTurns[1], kTurns[2], "Who was there?"});
    EXPECT_EQ(say(c, b, kTurns[2]), ref[2]);
    EXPECT_EQ(d.stop(), 0);
  }
  // After a restart the fork's KV comes back from the chunk store and it goes on exactly.
  DaemonProcess d(dir, exact());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  EXPECT_EQ(say(c, b, "Who was there?"), ref[3]);
  expect_kv_right(c, b);
}

TEST(Rewind, RegenerateGivesTheFirstAnswerAgain) {
  DaemonProcess d(scratch_dir(), exact());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string a = new_session(c);
  std::vector<std::string> answers;
  std::vector<std::uint32_t> tokens;  // after each turn
  for (const auto& t : kTurns) {
    answers.push_back(say(c, a, t));
    tokens.push_back(show(c, a)["n_tokens"].get<std::uint32_t>());
  }

  // Drop the last turn: the tokens end where turn 2's answer ended, its closing included (turn 3
  // added the template's end of that answer before its message: core/chat_turns.h
  // answer_closing); the slot and the chunk store keep nothing past it.
  auto r = rewind(c, a, {{"drop_last", 2}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["n_messages"], 5);
  const std::uint32_t kept = r.body["n_tokens"].get<std::uint32_t>();
  EXPECT_GT(kept, tokens[1]);
  EXPECT_LT(kept, tokens[2]);
  ASSERT_EQ(r.body["messages"].size(), 5u);
  EXPECT_EQ(r.body["messages"][4]["content"], answers[1]);
  EXPECT_EQ(slot_cells(c, a, kept), kept);
  const auto au = audit(c, a);
  EXPECT_TRUE(au.value("ok", false)) << audit_failures(au);
  for (const auto& ch : au["chunks"]) {
    EXPECT_FALSE(ch["stale"].get<bool>()) << ch.dump();
    EXPECT_LE(ch["first_pos"].get<std::uint32_t>() + ch["cells"].get<std::uint32_t>(), kept) << ch.dump();
  }
  // Regenerate: the same answer, the same tokens.
  EXPECT_EQ(say(c, a, kTurns[2]), answers[2]);
  EXPECT_EQ(show(c, a)["n_tokens"], tokens[2]);

  // Keep the first 3 messages (system, turn 1), then edit turn 2 back to what it was.
  r = rewind(c, a, {{"keep", 3}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["n_tokens"].get<std::uint32_t>(), tokens[0] + (kept - tokens[1])) << "turn 1 and its closing";
  EXPECT_EQ(say(c, a, kTurns[1]), answers[1]);
  // Back to the system prompt alone.
  r = rewind(c, a, {{"keep", 1}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["n_tokens"], 0);
  EXPECT_EQ(r.body["messages"].size(), 1u);
  EXPECT_EQ(say(c, a, kTurns[0]), answers[0]);
  expect_kv_right(c, a);
}

// Not resident when it comes back: the chunks before the cut load, the rest is recomputed.
TEST(Rewind, RegenerateAfterTheSlotWasTakenGivesTheFirstAnswerAgain) {
  DaemonProcess d(scratch_dir(), exact({}, "1"));
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string a = new_session(c);
  std::vector<std::string> answers;
  for (const auto& t : kTurns) answers.push_back(say(c, a, t));
  ASSERT_EQ(rewind(c, a, {{"drop_last", 2}}).status, 200u);
  say(c, new_session(c), "Something else entirely.");  // takes the only slot
  EXPECT_EQ(say(c, a, kTurns[2]), answers[2]);
  expect_kv_right(c, a);
}

TEST(Rewind, BadBodiesAreRefusedNamingTheField) {
  DaemonProcess d(scratch_dir(), exact());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string a = new_session(c);
  for (int i = 0; i < 2; ++i) say(c, a, kTurns[i]);  // 5 messages
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{}", "keep"},
      {R"({"drop_last": 2, "keep": 3})", "drop_last"},
      {R"({"drop_last": 0})", "drop_last"},
      {R"({"drop_last": 5})", "drop_last"},       // the system message stays
      {R"({"drop_last": 1})", "drop_last"},       // half a turn
      {R"({"drop_last": -1})", "drop_last"},
      {R"({"drop_last": "2"})", "drop_last"},
      {R"({"drop_last": 1.5})", "drop_last"},
      {R"({"keep": 5})", "keep"},                 // drops nothing
      {R"({"keep": 0})", "keep"},                 // the system message stays
      {R"({"keep": 2})", "keep"},                 // half a turn
      {R"({"keep": 3, "dry_run": true})", "dry_run"},
  };
  for (const auto& [body, param] : cases) {
    auto r = call(c, "POST", "/v1/sessions/" + a + "/rewind", body);
    EXPECT_EQ(r.status, 400u) << body << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["param"], param) << body << ": " << r.raw;
  }
  EXPECT_EQ(call(c, "POST", "/v1/sessions/" + a + "/rewind", std::string("not json")).status, 400u);
  EXPECT_EQ(call(c, "POST", "/v1/sessions/" + a + "/rewind", std::string()).status, 400u);
  EXPECT_EQ(show(c, a)["n_messages"], 5);  // nothing changed
  // A fork takes no fields.
  auto f = call(c, "POST", "/v1/sessions/" + a + "/fork", nlohmann::json{{"keep", 1}});
  EXPECT_EQ(f.status, 400u) << f.raw;
  EXPECT_EQ(f.body["error"]["param"], "keep");
  // Routes: other methods 405, unknown sessions 404.
  EXPECT_EQ(call(c, "GET", "/v1/sessions/" + a + "/fork").status, 405u);
  EXPECT_EQ(call(c, "DELETE", "/v1/sessions/" + a + "/rewind").status, 405u);
  EXPECT_EQ(call(c, "POST", "/v1/sessions/ses_000000000000000000000000/fork").status, 404u);
  EXPECT_EQ(rewind(c, "ses_000000000000000000000000", {{"drop_last", 2}}).status, 404u);
  // A session with no system prompt may go back to nothing.
  auto r = call(c, "POST", "/v1/sessions", nlohmann::json::object());
  const std::string bare = r.body.value("id", "");
  say(c, bare, kTurns[0]);
  r = rewind(c, bare, {{"drop_last", 2}});
  EXPECT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["n_messages"], 0);
  EXPECT_EQ(rewind(c, bare, {{"keep", 0}}).status, 400u);  // nothing left to drop
}

TEST(Fork, OwnershipLimitsAndBusySessions) {
  DaemonProcess d(scratch_dir(), exact({"--max-sessions-per-user", "2"}));
  ASSERT_TRUE(d.start()) << d.log();
  const std::string sock = d.socket();
  // uid 4242 owns a session with a turn; it may fork it once (its limit is 2 sessions).
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const int owner = wait_child(spawn_as(4242, 4242, [&] {
    client::HttpClient c(sock);
    auto r = c.request("POST", "/v1/sessions", "{}");
    if (!r || r->status != 201) return 1;
    const auto id = nlohmann::json::parse(r->body)["id"].get<std::string>();
    auto t = c.request("POST", "/v1/sessions/" + id + "/messages",
                       R"({"content":"Tell me a story.","stream":false,"max_tokens":4})");
    if (!t || t->status != 200) return 2;
    auto f = c.request("POST", "/v1/sessions/" + id + "/fork", "");
    if (!f || f->status != 201) return 3;
    if (nlohmann::json::parse(f->body)["owner_uid"] != 4242) return 4;
    auto again = c.request("POST", "/v1/sessions/" + id + "/fork", "");
    if (!again || again->status != 429) return 5;
    if (nlohmann::json::parse(again->body)["error"]["param"] != "max-sessions-per-user") return 6;
    if (::write(p[1], id.data(), id.size()) != static_cast<ssize_t>(id.size())) return 7;
    return 0;
  }));
  ::close(p[1]);
  ASSERT_EQ(owner, 0);
  char buf[64] = {};
  ASSERT_GT(::read(p[0], buf, sizeof buf - 1), 0);
  ::close(p[0]);
  const std::string id = buf;
  // Another uid can neither fork nor rewind it: it does not exist for them.
  const int other = wait_child(spawn_as(65534, 65534, [&] {
    client::HttpClient c(sock);
    auto f = c.request("POST", "/v1/sessions/" + id + "/fork", "");
    auto r = c.request("POST", "/v1/sessions/" + id + "/rewind", R"({"drop_last":2})");
    if (!f || f->status != 404) return 1;
    if (!r || r->status != 404) return 2;
    return 0;
  }));
  EXPECT_EQ(other, 0);
  // An admin (root) may fork it; the fork is the admin's.
  const auto c = d.client();
  auto f = call(c, "POST", "/v1/sessions/" + id + "/fork");
  ASSERT_EQ(f.status, 201u) << f.raw;
  EXPECT_EQ(f.body["owner_uid"], 0);
  const std::string mine = f.body.value("id", "");

  // While a turn streams on a session, fork and rewind answer 409.
  unsigned fork_status = 0, rewind_status = 0;
  bool asked = false;
  client::HttpClient streaming = c;
  auto body = greedy_body(64);
  body["content"] = "Tell me a long story.";
  body["ignore_eos"] = true;
  body["stream"] = true;
  auto r = streaming.request("POST", "/v1/sessions/" + mine + "/messages", body.dump(), [&](const std::string&) {
    if (!asked) {
      asked = true;
      fork_status = call(c, "POST", "/v1/sessions/" + mine + "/fork").status;
      rewind_status = rewind(c, mine, {{"drop_last", 2}}).status;
    }
    return true;
  });
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(asked);
  EXPECT_EQ(fork_status, 409u);
  EXPECT_EQ(rewind_status, 409u);
}

TEST(Fork, CountsAgainstTheStoredBytesLimit) {
  DaemonProcess d(scratch_dir(), exact({"--max-stored-mib-per-user", "1"}));
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  // A session holding ~0.6 MiB: its fork would take the uid past 1 MiB.
  const std::string big(600 * 1024, 'a');
  auto r = call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", big}});
  ASSERT_EQ(r.status, 201u) << r.raw;
  auto f = call(c, "POST", "/v1/sessions/" + r.body.value("id", "") + "/fork");
  EXPECT_EQ(f.status, 429u) << f.raw;
  EXPECT_EQ(f.body["error"]["param"], "max-stored-mib-per-user");
  EXPECT_EQ(call(c, "GET", "/v1/sessions").body["data"].size(), 1u);
}

}  // namespace
}  // namespace llmd::test
