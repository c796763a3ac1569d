// Sessions against the real daemon: restarts (clean and kill -9), other users, cancellation by
// disconnect, busy sessions, many concurrent clients.
#include <grp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

const std::vector<std::string> kTurns = {"Tell me a story.", "What happened next?", "How did it end?"};

std::string say(const client::HttpClient& c, const std::string& id, const std::string& text) {
  auto body = greedy_body(20);
  body["content"] = text;
  body["stream"] = false;
  auto r = call(c, "POST", "/v1/sessions/" + id + "/messages", body);
  EXPECT_EQ(r.status, 200u) << r.raw;
  return r.status == 200 ? r.body["message"]["content"].get<std::string>() : "";
}

std::string new_session(const client::HttpClient& c) {
  auto r = call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "You tell stories."}});
  EXPECT_EQ(r.status, 201u) << r.raw;
  return r.body.value("id", "");
}

// The answers of a session that never restarts.
std::vector<std::string> reference_answers() {
  DaemonProcess d(scratch_dir());
  EXPECT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string id = new_session(c);
  std::vector<std::string> out;
  for (const auto& t : kTurns) out.push_back(say(c, id, t));
  return out;
}

// Two turns on a new session in a daemon over `dir`, then stop(daemon); returns the session id.
std::string two_turns_then(const std::string& dir, std::vector<std::string>& answers,
                           const std::function<void(DaemonProcess&)>& stop) {
  DaemonProcess d(dir);
  EXPECT_TRUE(d.start()) << d.log();
  const std::string id = new_session(d.client());
  answers.push_back(say(d.client(), id, kTurns[0]));
  answers.push_back(say(d.client(), id, kTurns[1]));  // acknowledged: must survive
  stop(d);
  return id;
}

TEST(DaemonRestart, SessionContinuesIdenticallyAfterSigterm) {
  const auto expected = reference_answers();
  const std::string dir = scratch_dir();
  std::vector<std::string> got;
  const std::string id = two_turns_then(dir, got, [](DaemonProcess& d) {
    const int status = d.stop(SIGTERM);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n" << d.log();
    const auto notes = d.notifications();
    bool stopping = false;
    for (const auto& n : notes) stopping = stopping || n.find("STOPPING=1") != std::string::npos;
    EXPECT_TRUE(stopping) << "no STOPPING=1 notification";
  });
  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  got.push_back(say(again.client(), id, kTurns[2]));
  EXPECT_EQ(got, expected);
  EXPECT_EQ(call(again.client(), "GET", "/v1/sessions/" + id).body["messages"].size(), 7u);
}

TEST(DaemonRestart, SessionContinuesIdenticallyAfterKill9) {
  const auto expected = reference_answers();
  const std::string dir = scratch_dir();
  std::vector<std::string> got;
  const std::string id = two_turns_then(dir, got, [](DaemonProcess& d) { d.kill9(); });
  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  got.push_back(say(again.client(), id, kTurns[2]));
  EXPECT_EQ(got, expected);
}

// A turn in flight when the daemon is killed is simply not there afterwards; the session is
// intact and continues.
TEST(DaemonRestart, Kill9MidTurnLeavesTheLastAcknowledgedTurn) {
  const std::string dir = scratch_dir();
  std::string id;
  {
    DaemonProcess d(dir);
    ASSERT_TRUE(d.start()) << d.log();
    id = new_session(d.client());
    say(d.client(), id, kTurns[0]);
    std::thread killer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      d.kill9();
    });
    auto body = greedy_body(2000);
    body["content"] = "A very long answer, please.";
    body["ignore_eos"] = true;
    client::HttpClient c = d.client();
    auto r = c.request("POST", "/v1/sessions/" + id + "/messages", body.dump(), [](const std::string&) { return true; });
    killer.join();
  }
  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  auto shown = call(again.client(), "GET", "/v1/sessions/" + id);
  ASSERT_EQ(shown.status, 200u);
  EXPECT_EQ(shown.body["messages"].size(), 3u);  // system + the one acknowledged turn
  EXPECT_FALSE(say(again.client(), id, kTurns[1]).empty());
}

// SIGTERM while a turn streams: the stream ends properly (a last event, [DONE]), the daemon exits 0
// after its grace period, and the session keeps every acknowledged turn (not the cut one).
TEST(DaemonRestart, SigtermDuringAStreamEndsItCleanly) {
  const std::string dir = scratch_dir();
  DaemonOptions o;
  o.args = {"--shutdown-timeout-ms", "200"};
  DaemonProcess d(dir, o);
  ASSERT_TRUE(d.start()) << d.log();
  const std::string id = new_session(d.client());
  say(d.client(), id, kTurns[0]);
  std::string last_finish, error_code;
  bool done = false;
  int events = 0;
  std::thread stopper;
  client::HttpClient c = d.client();
  auto body = greedy_body(1900);
  body["content"] = "Keep going.";
  body["ignore_eos"] = true;
  body["stream"] = true;
  auto r = c.request("POST", "/v1/sessions/" + id + "/messages", body.dump(), [&](const std::string& data) {
    if (data == "[DONE]") {
      done = true;
      return true;
    }
    if (++events == 3) stopper = std::thread([&] { ::kill(d.pid(), SIGTERM); });
    auto ev = nlohmann::json::parse(data, nullptr, false);
    if (ev.is_object() && ev.contains("choices") && ev["choices"][0]["finish_reason"].is_string()) {
      last_finish = ev["choices"][0]["finish_reason"];
    }
    if (ev.is_object() && ev.contains("error")) error_code = ev["error"].value("code", "");
    return true;
  });
  if (stopper.joinable()) stopper.join();
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(done);
  // Stopped by the shutdown, not finished: an error event (503's code), never a finish_reason
  // OpenAI's clients do not know.
  EXPECT_EQ(last_finish, "");
  EXPECT_EQ(error_code, "unavailable");
  const int status = d.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << d.log();
  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_EQ(call(again.client(), "GET", "/v1/sessions/" + id).body["messages"].size(), 3u);
}

// Runs fn in a child process with the given uid/gid (real kernel credentials); returns its exit code.
int as_user(uid_t uid, gid_t gid, const std::function<int()>& fn) { return wait_child(spawn_as(uid, gid, fn)); }

TEST(DaemonOwnership, OtherUidsCannotSeeOrTouchASession) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const std::string sock = d.socket();
  // uid 4242 creates a session and reports its id through a pipe.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const int created = as_user(4242, 4242, [&] {
    client::HttpClient c(sock);
    auto r = c.request("POST", "/v1/sessions", "{}");
    if (!r || r->status != 201) return 1;
    const auto id = nlohmann::json::parse(r->body)["id"].get<std::string>();
    if (::write(p[1], id.data(), id.size()) != static_cast<ssize_t>(id.size())) return 2;
    // Its owner sees it.
    auto mine = c.request("GET", "/v1/sessions/" + id);
    return mine && mine->status == 200 ? 0 : 3;
  });
  ::close(p[1]);
  ASSERT_EQ(created, 0);
  char buf[64] = {};
  ASSERT_GT(::read(p[0], buf, sizeof buf - 1), 0);
  ::close(p[0]);
  const std::string id = buf;

  // nobody gets 404 for everything about it, and does not see it listed.
  const int nobody = as_user(65534, 65534, [&] {
    client::HttpClient c(sock);
    auto get = c.request("GET", "/v1/sessions/" + id);
    auto del = c.request("DELETE", "/v1/sessions/" + id);
    auto msg = c.request("POST", "/v1/sessions/" + id + "/messages", R"({"content":"hi","stream":false})");
    auto list = c.request("GET", "/v1/sessions");
    if (!get || get->status != 404) return 1;
    if (!del || del->status != 404) return 2;
    if (!msg || msg->status != 404) return 3;
    if (!list || list->status != 200 || nlohmann::json::parse(list->body)["data"].size() != 0) return 4;
    if (get->body.find(id) == std::string::npos) return 5;  // the message names what was asked for
    return 0;
  });
  EXPECT_EQ(nobody, 0);
  // root (an admin) sees and may manage it.
  auto all = call(d.client(), "GET", "/v1/sessions");
  ASSERT_EQ(all.body["data"].size(), 1u);
  EXPECT_EQ(all.body["data"][0]["owner_uid"], 4242);
  EXPECT_EQ(call(d.client(), "DELETE", "/v1/sessions/" + id).status, 200u);
}

// A session's app is a client name under the same rule as a request's (valid_client_name): 1-64 of
// A-Z a-z 0-9 . _ -, or none.
TEST(DaemonOwnership, ASessionsAppFollowsTheClientNameRule) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const std::string sock = d.socket();
  const int nobody = as_user(65534, 65534, [&] {
    client::HttpClient c(sock);
    int check = 0;
    const std::vector<std::string> bad_names = {"a/b c",      "bad app/../", std::string(65, 'a'),
                                                "caf\xC3\xA9", "tab\there",   "a:b"};
    for (const std::string& bad : bad_names) {
      ++check;
      auto r = c.request("POST", "/v1/sessions", nlohmann::json{{"app", bad}}.dump());
      if (!r || r->status != 400) return check;
      const auto body = nlohmann::json::parse(r->body, nullptr, false);
      if (body.is_discarded() || body["error"]["message"].get<std::string>().find("app") == std::string::npos) {
        return 20 + check;
      }
    }
    for (const std::string& good : std::vector<std::string>{std::string(64, 'a'), "editor.v2_x-y", ""}) {
      ++check;
      auto r = c.request("POST", "/v1/sessions", nlohmann::json{{"app", good}}.dump());
      if (!r || r->status != 201) return 40 + check;
      if (nlohmann::json::parse(r->body)["app"] != good) return 60 + check;
    }
    return 0;
  });
  EXPECT_EQ(nobody, 0) << "the check that failed returned " << nobody;
}

// Sessions stored before the rule (or edited on disk) keep working: shown as stored, their turns
// scheduled as the uid's own client (a bad name never reaches the scheduler).
TEST(DaemonOwnership, SessionsStoredWithABadAppKeepWorking) {
  const std::string dir = scratch_dir();
  std::string id;
  {
    DaemonProcess d(dir);
    ASSERT_TRUE(d.start()) << d.log();
    id = new_session(d.client());
    ASSERT_EQ(d.stop(SIGTERM), 0) << d.log();
  }
  DaemonProcess d(dir);
  const auto edit = run_program({"/usr/bin/sqlite3", d.state_dir() + "/sessions.db",
                                 "UPDATE sessions SET app = 'bad app/../' WHERE id = '" + id + "'"});
  ASSERT_EQ(edit.exit_code, 0) << edit.err;
  ASSERT_TRUE(d.start()) << d.log();
  EXPECT_EQ(call(d.client(), "GET", "/v1/sessions/" + id).body["app"], "bad app/../");
  EXPECT_EQ(call(d.client(), "GET", "/v1/sessions").body["data"][0]["app"], "bad app/../");
  EXPECT_FALSE(say(d.client(), id, "Hello").empty());
  const auto clients = call(d.client(), "GET", "/v1/status").body["scheduler"]["clients"];
  ASSERT_EQ(clients.size(), 1u) << clients;
  EXPECT_EQ(clients[0]["client"], std::to_string(::getuid())) << clients;
  EXPECT_EQ(call(d.client(), "DELETE", "/v1/sessions/" + id).status, 200u);
}

// /v1/status shows a non-admin its own sessions' slots; of others' only aggregates (counts, no
// session ids, cells or activity per slot).
TEST(DaemonOwnership, StatusShowsOthersSlotsOnlyAsAggregates) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const std::string roots = new_session(d.client());
  ASSERT_FALSE(say(d.client(), roots, "Tell me about the sea.").empty());
  const auto root_view = call(d.client(), "GET", "/v1/status").body;
  int root_slots = 0;
  for (const auto& s : root_view["slots"]) {
    if (s["session"] == roots) {
      ++root_slots;
      EXPECT_GT(s["cells"].get<int>(), 0) << s;
    }
  }
  ASSERT_EQ(root_slots, 1) << root_view["slots"];
  const std::string sock = d.socket();
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const int nobody = as_user(65534, 65534, [&] {
    client::HttpClient c(sock);
    // Every slot holds someone else's KV (or nothing): nothing about any of them but its index.
    auto only_aggregates = [](const nlohmann::json& st, const std::string& mine) {
      if (!st["slots"].is_array() || st["slots"].size() != st["context"]["slots"].get<std::size_t>()) return false;
      for (const auto& s : st["slots"]) {
        if (s["session"].is_string() && s["session"] == mine && s["cells"].get<int>() > 0) continue;
        if (!s["session"].is_null() || s.contains("cells") || s.contains("busy")) return false;
      }
      return st["queue"].contains("running") && st["sessions"].contains("total");
    };
    auto st = c.request("GET", "/v1/status");
    if (!st || st->status != 200) return 1;
    if (!only_aggregates(nlohmann::json::parse(st->body), "")) {
      if (::write(p[1], st->body.data(), st->body.size()) < 0) return 9;
      return 2;
    }
    // Its own session's slot is shown in full.
    auto created = c.request("POST", "/v1/sessions", "{}");
    if (!created || created->status != 201) return 3;
    const std::string mine = nlohmann::json::parse(created->body)["id"];
    auto turn = c.request("POST", "/v1/sessions/" + mine + "/messages",
                          R"({"content":"Hello","max_tokens":4,"stream":false})");
    if (!turn || turn->status != 200) return 4;
    st = c.request("GET", "/v1/status");
    if (!st || st->status != 200) return 5;
    const auto view = nlohmann::json::parse(st->body);
    if (!only_aggregates(view, mine)) return 6;
    int shown = 0;
    for (const auto& s : view["slots"]) shown += s["session"] == mine ? 1 : 0;
    return shown == 1 ? 0 : 7;
  });
  ::close(p[1]);
  std::string seen(4096, '\0');
  seen.resize(static_cast<std::size_t>(std::max<ssize_t>(0, ::read(p[0], seen.data(), seen.size()))));
  ::close(p[0]);
  EXPECT_EQ(nobody, 0) << "the check that failed returned " << nobody << "; nobody saw: " << seen;
}

// Connects, sends a request, returns the socket (the caller reads or closes it).
int send_raw(const std::string& sock, const std::string& request) {
  const int fd = connect_to(sock);
  if (fd < 0) return -1;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(DaemonCancel, ClientThatHangsUpFreesItsSlot) {
  DaemonOptions one_slot;
  one_slot.args = {"--slots", "1"};
  DaemonProcess d(scratch_dir(), one_slot);
  ASSERT_TRUE(d.start()) << d.log();
  const std::string body = R"({"prompt":"Once upon a time","max_tokens":1900,"ignore_eos":true,"stream":true})";
  const int fd = send_raw(d.socket(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                          std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_GE(fd, 0);
  char buf[512];
  ASSERT_GT(::read(fd, buf, sizeof buf), 0);  // generation has started
  ::close(fd);                                 // and the client is gone
  // The only slot must come free: this request completes instead of waiting for 1900 tokens.
  auto b = greedy_body(4);
  b["prompt"] = "Hello";
  auto r = call(d.client(), "POST", "/v1/completions", b);
  EXPECT_EQ(r.status, 200u) << r.raw;
  auto st = call(d.client(), "GET", "/v1/status");
  EXPECT_EQ(st.body["queue"]["running"], 0);
  // ignore_eos makes the abandoned request need 1900 tokens; it was cut short.
  EXPECT_LT(st.body["counters"]["tokens_generated"].get<int>(), 1900) << "the abandoned generation ran to the end";
}

TEST(DaemonBusy, SecondRequestOnABusySessionGets409) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const std::string id = new_session(d.client());
  const std::string body = R"({"content":"Go on and on","max_tokens":1900,"ignore_eos":true})";
  const int fd = send_raw(d.socket(), "POST /v1/sessions/" + id + "/messages HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                          std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_GE(fd, 0);
  char buf[512];
  ASSERT_GT(::read(fd, buf, sizeof buf), 0);
  auto second = call(d.client(), "POST", "/v1/sessions/" + id + "/messages", nlohmann::json{{"content", "hi"}});
  EXPECT_EQ(second.status, 409u) << second.raw;
  EXPECT_EQ(second.body["error"]["code"], "busy");
  EXPECT_EQ(call(d.client(), "DELETE", "/v1/sessions/" + id).status, 409u);
  ::close(fd);
}

TEST(DaemonConcurrency, SixteenClientsAllCompleteCorrectly) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  std::vector<std::string> prompts;
  for (int i = 0; i < 16; ++i) prompts.push_back("Story number " + std::to_string(i) + ": once upon a time");
  std::vector<std::string> expected;
  for (const auto& p : prompts) {
    auto b = greedy_body(16);
    b["prompt"] = p;
    expected.push_back(call(d.client(), "POST", "/v1/completions", b).body["choices"][0]["text"]);
  }
  std::vector<std::string> got(prompts.size());
  std::vector<unsigned> status(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      client::HttpClient c(d.socket());
      auto b = greedy_body(16);
      b["prompt"] = prompts[i];
      b["stream"] = i % 2 == 0;
      std::string streamed;
      auto r = c.request("POST", "/v1/completions", b.dump(), [&](const std::string& data) {
        auto ev = nlohmann::json::parse(data, nullptr, false);
        if (ev.is_object() && ev.contains("choices")) streamed += ev["choices"][0]["text"].get<std::string>();
        return true;
      });
      if (!r) return;
      status[i] = r->status;
      got[i] = b["stream"] ? streamed : nlohmann::json::parse(r->body)["choices"][0]["text"].get<std::string>();
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(status[i], 200u) << i;
    EXPECT_EQ(got[i], expected[i]) << "client " << i;
  }
}

}  // namespace
}  // namespace llmd::test
