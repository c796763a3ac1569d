// Bad input against the real daemon: each gets a clear error, never a crash, hang or lost data.
#include <fcntl.h>
#include <sys/resource.h>

#include <deque>
#include <set>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

unsigned status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0) return 0;
  return static_cast<unsigned>(std::stoul(response.substr(9, 3)));
}

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DaemonOptions o;
    o.args = {"--max-body-bytes", "4096", "--request-timeout-ms", "400", "--max-connections", "4",
              "--max-header-bytes", "2048"};
    daemon_ = std::make_unique<DaemonProcess>(scratch_dir(), o);
    ASSERT_TRUE(daemon_->start()) << daemon_->log();
    c_ = std::make_unique<client::HttpClient>(daemon_->client());
  }
  void TearDown() override {
    // Whatever happened, the daemon is alive and well.
    auto h = call(*c_, "GET", "/v1/health");
    EXPECT_EQ(h.status, 200u) << daemon_->log();
    EXPECT_TRUE(daemon_->running());
  }
  void expect_error(const JsonReply& r, unsigned status, const std::string& needle) {
    EXPECT_EQ(r.status, status) << r.raw;
    ASSERT_TRUE(r.body.is_object()) << r.raw;
    ASSERT_TRUE(r.body.contains("error")) << r.raw;
    EXPECT_TRUE(r.body["error"]["message"].is_string());
    EXPECT_TRUE(r.body["error"]["type"].is_string());
    EXPECT_NE(r.body["error"]["message"].get<std::string>().find(needle), std::string::npos) << r.raw;
  }
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<client::HttpClient> c_;
};

TEST_F(LimitsTest, BodyTooLarge) {
  nlohmann::json b = {{"prompt", std::string(8000, 'a')}};
  expect_error(call(*c_, "POST", "/v1/completions", b), 413, "larger than 4096");
}

TEST_F(LimitsTest, PromptLongerThanTheContext) {
  DaemonOptions o;
  o.args = {"--ctx", "256"};
  DaemonProcess small(scratch_dir(), o);
  ASSERT_TRUE(small.start()) << small.log();
  nlohmann::json b = {{"prompt", std::string(1500, 'a')}, {"max_tokens", 4}};
  auto r = call(small.client(), "POST", "/v1/completions", b);
  expect_error(r, 400, "context_length_exceeded");
  EXPECT_EQ(r.body["error"]["code"], "context_length_exceeded");
}

TEST_F(LimitsTest, InvalidJson) {
  expect_error(call(*c_, "POST", "/v1/completions", std::string("{\"prompt\": ")), 400, "not valid JSON");
  expect_error(call(*c_, "POST", "/v1/completions", std::string("[1,2]")), 400, "JSON object");
  expect_error(call(*c_, "POST", "/v1/completions", std::string()), 400, "JSON object");
}

TEST_F(LimitsTest, InvalidUtf8) {
  expect_error(call(*c_, "POST", "/v1/completions", std::string("{\"prompt\": \"caf\xC3\"}")), 400, "UTF-8");
  const std::string id = call(*c_, "POST", "/v1/sessions", std::string("{}")).body["id"];
  expect_error(call(*c_, "POST", "/v1/sessions/" + id + "/messages", std::string("{\"content\": \"\xFF\xFE\"}")), 400,
               "UTF-8");
}

TEST_F(LimitsTest, WrongTypesNameTheField) {
  expect_error(call(*c_, "POST", "/v1/completions", nlohmann::json{{"prompt", "x"}, {"temperature", "hot"}}), 400,
               "temperature");
  expect_error(call(*c_, "POST", "/v1/completions", nlohmann::json{{"prompt", 42}}), 400, "prompt");
  expect_error(call(*c_, "POST", "/v1/chat/completions", nlohmann::json{{"messages", "hi"}}), 400, "messages");
  expect_error(call(*c_, "POST", "/v1/chat/completions",
                    nlohmann::json{{"messages", {{{"role", "user"}, {"content", 5}}}}}),
               400, "content");
  // Content parts whose fields have the wrong types.
  for (const auto& part : {nlohmann::json{{"type", 5}, {"text", "x"}}, nlohmann::json{{"type", {"text"}}, {"text", "x"}},
                           nlohmann::json{{"type", "text"}, {"text", 5}}, nlohmann::json{{"type", "text"}},
                           nlohmann::json("x"), nlohmann::json{{"type", nullptr}}}) {
    expect_error(call(*c_, "POST", "/v1/chat/completions",
                      nlohmann::json{{"messages", {{{"role", "user"}, {"content", {part}}}}}}),
                 400, "content");
  }
  expect_error(call(*c_, "POST", "/v1/chat/completions",
                    nlohmann::json{{"messages", {{{"role", 5}, {"content", "x"}}}}}),
               400, "role");
  expect_error(call(*c_, "POST", "/v1/completions", nlohmann::json{{"prompt", "x"}, {"stream", "yes"}}), 400, "stream");
  expect_error(call(*c_, "POST", "/v1/completions", nlohmann::json{{"prompt", "x"}, {"stop", {1}}}), 400, "stop");
  expect_error(call(*c_, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", {1}}}), 400, "system_prompt");
}

TEST_F(LimitsTest, MaxTokensOutOfRange) {
  for (const auto& bad : {nlohmann::json(0), nlohmann::json(-3), nlohmann::json(1000000000), nlohmann::json(2.5)}) {
    expect_error(call(*c_, "POST", "/v1/completions", nlohmann::json{{"prompt", "x"}, {"max_tokens", bad}}), 400,
                 "max_tokens");
  }
}

// Numbers a double cannot hold, and integers a field cannot take, are the client's mistake (400
// naming the field), never a 500 or undefined behaviour: the parser reports an overflowing number
// as out_of_range, not as a parse error.
TEST_F(LimitsTest, NumbersOutOfRangeAre400NamingTheField) {
  const std::string id = call(*c_, "POST", "/v1/sessions", std::string("{}")).body["id"];
  const std::vector<std::pair<std::string, std::string>> endpoints = {
      {"/v1/completions", R"("prompt": "x", )"},
      {"/v1/chat/completions", R"("messages": [{"role": "user", "content": "x"}], )"},
      {"/v1/sessions/" + id + "/messages", R"("content": "x", "stream": false, )"},
  };
  for (const auto& [path, fields] : endpoints) {
    for (const std::string field : {"max_tokens", "max_completion_tokens", "seed", "top_k"}) {
      for (const std::string number : {"1e999999", "-1e999999", "1e300", "-1e300", "1.5", "99999999999999999999999",
                                       "18446744073709551615", "-9223372036854775809", "9223372036854775807"}) {
        expect_error(call(*c_, "POST", path, "{" + fields + "\"" + field + "\": " + number + "}"), 400, field);
      }
    }
    for (const std::string field : {"temperature", "top_p", "min_p", "repeat_penalty"}) {
      for (const std::string number : {"1e999999", "-1e999999", "1e300", "-1e300"}) {
        expect_error(call(*c_, "POST", path, "{" + fields + "\"" + field + "\": " + number + "}"), 400, field);
      }
    }
  }
  // A field the endpoint does not read is still part of the body the client sent.
  expect_error(call(*c_, "POST", "/v1/completions", std::string(R"({"prompt": "x", "extra": 1e999999})")), 400,
               "extra");
  expect_error(call(*c_, "POST", "/v1/sessions", std::string(R"({"app": "a", "n": -1e999999})")), 400, "n");
  expect_error(call(*c_, "POST", "/v1/chat/completions",
                    std::string(R"({"messages": [{"role": "user", "content": "x", "weight": 1e400}]})")),
               400, "messages");
  // No field to name: the body itself.
  for (const std::string body : {"1e999999", "-1e999999", "[1e999999]"}) {
    for (const std::string path : {"/v1/completions", "/v1/sessions"}) {
      expect_error(call(*c_, "POST", path, body), 400, "out of range");
    }
  }
}

TEST_F(LimitsTest, UnknownEndpointAndWrongMethod) {
  expect_error(call(*c_, "GET", "/v2/nothing"), 404, "no endpoint");
  expect_error(call(*c_, "GET", "/v1/sessions/x/messages/y"), 404, "no endpoint");
  auto r = call(*c_, "DELETE", "/v1/completions");
  expect_error(r, 405, "not allowed");
  expect_error(call(*c_, "PUT", "/v1/sessions"), 405, "GET, POST");
  expect_error(call(*c_, "GET", "/v1/sessions/ses_nope"), 404, "ses_nope");
}

TEST_F(LimitsTest, SlowClientGetsRequestTimeout) {
  // The head of a request, and then nothing.
  const std::string resp = raw_exchange(daemon_->socket(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\n");
  EXPECT_EQ(status_of(resp), 408u) << resp;
}

TEST_F(LimitsTest, HeadersTooLarge) {
  const std::string resp = raw_exchange(
      daemon_->socket(), "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'y') + "\r\n\r\n");
  EXPECT_EQ(status_of(resp), 431u) << resp;
}

TEST_F(LimitsTest, MalformedHttp) {
  const std::string resp = raw_exchange(daemon_->socket(), "HELLO THERE\r\n\r\n");
  EXPECT_EQ(status_of(resp), 400u) << resp;
}

TEST_F(LimitsTest, TooManyConnections) {
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(connect_to(daemon_->socket()));
    ASSERT_GE(held.back(), 0);
  }
  // Let the server accept them all before the fifth arrives.
  for (int i = 0; i < 50 && call(*c_, "GET", "/v1/status").status != 503; ++i) {
  }
  const int extra = connect_to(daemon_->socket());
  ASSERT_GE(extra, 0);
  const std::string req = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
  (void)::send(extra, req.data(), req.size(), MSG_NOSIGNAL);
  const std::string resp = read_all(extra);
  EXPECT_EQ(status_of(resp), 503u) << resp;
  EXPECT_NE(resp.find("too many connections"), std::string::npos);
  ::close(extra);
  for (int fd : held) ::close(fd);
  // Once they are gone, connections are welcome again (TearDown checks health).
  for (int i = 0; i < 100 && call(*c_, "GET", "/v1/health").status != 200; ++i) ::usleep(10000);
}

TEST_F(LimitsTest, KeepAliveServesSeveralRequests) {
  const std::string resp = raw_exchange(daemon_->socket(),
                                    "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
                                    "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(resp.find("\"status\":\"ok\""), std::string::npos) << resp;
  EXPECT_NE(resp.find("\"object\":\"list\""), std::string::npos) << resp;
}

// --- One uid against everyone else: per-uid connection limits and the request-head deadline ----

// What a connection answered without being asked (a refusal at accept, a 408): the status and
// the error's param ("" if none), or status 0 while nothing (or not all of it) has come.
struct Unasked {
  unsigned status = 0;
  std::string param;
};

// Reads what is there without waiting; true once the server has answered and closed.
bool read_answer(int fd, std::string& got, Unasked& out) {
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    break;  // closed (or reset after its answer)
  }
  out.status = status_of(got);
  const auto body = got.find("\r\n\r\n");
  if (body != std::string::npos) {
    const auto j = nlohmann::json::parse(got.substr(body + 4), nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"]["param"].is_string()) out.param = j["error"]["param"];
  }
  return true;
}

// True once `fd` (the read end of a pipe) is closed: the parent's "stop".
bool stopped(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

// Requests another user makes while the attack goes on: every one must succeed. The number that
// did not, each reason once on stderr.
int ordinary_requests(const std::string& sock, int rounds) {
  client::HttpClient c(sock);
  int failed = 0;
  std::set<std::string> seen;
  auto expect = [&](const char* what, const Result<client::Response>& r, unsigned status) {
    if (r && r->status == status) return;
    ++failed;
    const std::string why =
        std::string(what) + ": " + (r ? std::to_string(r->status) + " " + r->body : r.error().to_string());
    if (seen.insert(why).second) std::fprintf(stderr, "%s\n", why.c_str());
  };
  for (int i = 0; i < rounds; ++i) {
    expect("health", c.request("GET", "/v1/health"), 200);
    expect("status", c.request("GET", "/v1/status"), 200);
    if (i % 10 == 0) {
      expect("completion", c.request("POST", "/v1/completions", R"({"prompt":"Once","max_tokens":2})"), 200);
      auto created = c.request("POST", "/v1/sessions", "{}");
      expect("session", created, 201);
      if (created && created->status == 201) {
        const std::string id = nlohmann::json::parse(created->body)["id"];
        expect("delete", c.request("DELETE", "/v1/sessions/" + id), 200);
      }
    }
  }
  return failed;
}

// Slowloris: uid 4501 opens more connections than anyone may hold and trickles a request head into
// each, a byte at a time, reconnecting whatever is closed. Root and uid 4502 are served all along;
// 4501's connections beyond its limit are refused at once naming max-connections-per-user, and
// those it holds are cut at the head deadline (408 naming header-timeout-ms) although bytes keep
// coming. (Only the global limit is set here: the per-uid one and the head deadline are defaults.)
TEST(ConnectionLimits, SlowlorisFromOneUidDoesNotStarveOthers) {
  DaemonOptions o;
  o.args = {"--max-connections", "64", "--request-timeout-ms", "60000"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const std::string sock = d.socket();
  int ready[2], stop[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(stop), 0);
  const pid_t attacker = spawn_as(4501, 4501, [&] {
    ::close(ready[0]);
    ::close(stop[1]);
    constexpr int kConnections = 100;
    const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Slow: " +
                             std::string(1000, 'z');
    struct Conn {
      int fd;
      std::size_t sent = 0;
      std::string got;
    };
    std::deque<Conn> conns;
    int refused_per_user = 0, refused_other = 0, cut_at_head = 0, other_answers = 0;
    for (int i = 0; i < kConnections; ++i) {
      const int fd = connect_to(sock);
      if (fd < 0) return 1;
      conns.push_back({fd, 0, {}});
    }
    if (::write(ready[1], "r", 1) != 1) return 2;
    bool stopping = false;
    for (int round = 0; round < 600 && !conns.empty(); ++round) {  // a hang guard, not a clock
      stopping = stopping || stopped(stop[0]);
      int reconnect = 0;
      for (auto it = conns.begin(); it != conns.end();) {
        Unasked a;
        if (!read_answer(it->fd, it->got, a)) {
          if (it->sent < head.size() && ::send(it->fd, head.data() + it->sent, 1, MSG_NOSIGNAL) == 1) ++it->sent;
          ++it;
          continue;
        }
        if (a.status == 503 && a.param == "max-connections-per-user") ++refused_per_user;
        else if (a.status == 503) ++refused_other;
        else if (a.status == 408 && a.param == "header-timeout-ms") ++cut_at_head;
        else ++other_answers;
        ::close(it->fd);
        it = conns.erase(it);
        reconnect += stopping ? 0 : 1;
      }
      for (int i = 0; i < reconnect; ++i) {
        const int fd = connect_to(sock);
        if (fd >= 0) conns.push_back({fd, 0, {}});
      }
      ::usleep(100000);
    }
    std::fprintf(stderr, "attacker: refused %d (per user), %d (other); cut at the head deadline %d; other %d; "
                 "left %zu\n", refused_per_user, refused_other, cut_at_head, other_answers, conns.size());
    if (!conns.empty()) return 3;               // some connection was never answered
    if (refused_other != 0 || other_answers != 0) return 4;
    if (refused_per_user < kConnections - 32) return 5;
    return cut_at_head >= 1 ? 0 : 6;
  });
  ::close(ready[1]);
  ::close(stop[0]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the attacker could not connect";
  const pid_t other = spawn_as(4502, 4502, [&] { return std::min(ordinary_requests(sock, 20), 99); });
  const int root_failed = ordinary_requests(sock, 30);
  EXPECT_EQ(wait_child(other), 0) << "uid 4502's requests that failed (the child's exit code)";
  ::close(stop[1]);
  EXPECT_EQ(root_failed, 0);
  EXPECT_EQ(wait_child(attacker), 0) << "the attacker's check that failed (see its stderr)";
  ::close(ready[0]);
  EXPECT_EQ(call(d.client(), "GET", "/v1/health").status, 200u) << d.log();
}

// A flood of connects from one uid (as fast as it can, holding up to 2000): others are served all
// along, and the flood's connections beyond its limit are refused naming the key.
TEST(ConnectionLimits, ConnectFloodFromOneUidDoesNotStarveOthers) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const std::string sock = d.socket();
  int ready[2], stop[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(stop), 0);
  const pid_t flooder = spawn_as(4503, 4503, [&] {
    ::close(ready[0]);
    ::close(stop[1]);
    rlimit nofile{};
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
    const std::size_t hold = std::min<std::size_t>(2000, nofile.rlim_cur > 64 ? nofile.rlim_cur - 64 : 16);
    std::deque<std::pair<int, std::string>> held;
    int refused_per_user = 0, refused_other = 0, connects = 0;
    bool told = false;
    auto settle = [&](std::pair<int, std::string>& conn) {
      Unasked a;
      if (read_answer(conn.first, conn.second, a) && a.status == 503) {
        ++(a.param == "max-connections-per-user" ? refused_per_user : refused_other);
      }
      ::close(conn.first);
    };
    while (!stopped(stop[0])) {
      const int fd = connect_to(sock, SOCK_NONBLOCK);
      if (fd < 0) continue;  // a full backlog: try again
      ++connects;
      held.emplace_back(fd, std::string());
      if (held.size() > hold) {
        settle(held.front());
        held.pop_front();
      }
      if (!told && connects > 300) {
        told = true;
        if (::write(ready[1], "r", 1) != 1) return 1;
      }
    }
    for (auto& conn : held) settle(conn);
    std::fprintf(stderr, "flooder: %d connects, refused %d (per user), %d (other)\n", connects, refused_per_user,
                 refused_other);
    if (refused_other != 0) return 2;
    return refused_per_user > 0 ? 0 : 3;
  });
  ::close(ready[1]);
  ::close(stop[0]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the flooder could not connect";
  const int root_failed = ordinary_requests(sock, 30);
  ::close(stop[1]);
  EXPECT_EQ(root_failed, 0);
  EXPECT_EQ(wait_child(flooder), 0) << "the flooder's check that failed (see its stderr)";
  ::close(ready[0]);
  EXPECT_EQ(call(d.client(), "GET", "/v1/health").status, 200u) << d.log();
  const auto connections = call(d.client(), "GET", "/v1/status").body["connections"];
  EXPECT_GT(connections["refused_per_user"].get<std::uint64_t>(), 0u) << connections;
  EXPECT_EQ(connections["refused_global"], 0) << connections;
  EXPECT_EQ(connections["max_connections_per_user"], 32) << connections;
}

// The per-uid limit counts a uid's open connections; root is not limited per uid (only by
// max-connections), so an administrator can always look at a daemon under attack.
TEST(ConnectionLimits, PerUserLimitCountsOpenConnectionsAndExemptsRoot) {
  DaemonOptions o;
  o.args = {"--max-connections-per-user", "2", "--max-connections", "16"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const std::string sock = d.socket();
  const std::string req = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
  // Opens n connections, sends a request on each; the statuses and params, in order.
  auto open_and_ask = [&](int n, std::vector<int>& fds) {
    std::vector<Unasked> out;
    for (int i = 0; i < n; ++i) fds.push_back(connect_to(sock));
    for (int fd : fds) (void)::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    for (int fd : fds) {
      std::string got;
      Unasked a;
      for (int tries = 0; tries < 10000 && status_of(got) == 0; ++tries) {
        if (read_answer(fd, got, a)) break;
        ::usleep(1000);
      }
      a.status = status_of(got);
      const auto body = got.find("\r\n\r\n");
      if (body != std::string::npos) {
        const auto j = nlohmann::json::parse(got.substr(body + 4), nullptr, false);
        if (j.is_object() && j.contains("error") && j["error"]["param"].is_string()) a.param = j["error"]["param"];
      }
      out.push_back(a);
    }
    return out;
  };
  std::vector<int> root_fds;
  for (const auto& a : open_and_ask(5, root_fds)) EXPECT_EQ(a.status, 200u);
  const int other = wait_child(spawn_as(4504, 4504, [&] {
    std::vector<int> fds;
    const auto answers = open_and_ask(5, fds);
    for (int i = 0; i < 5; ++i) {
      if (i < 2 && answers[i].status != 200) return 10 + i;
      if (i >= 2 && (answers[i].status != 503 || answers[i].param != "max-connections-per-user")) return 20 + i;
    }
    // Closing one makes room for one more.
    ::close(fds[0]);
    for (int tries = 0; tries < 5000; ++tries) {
      const std::string again = raw_exchange(sock, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      if (status_of(again) == 200) return 0;
      ::usleep(2000);
    }
    return 30;
  }));
  EXPECT_EQ(other, 0) << "the check that failed returned " << other;
  for (int fd : root_fds) ::close(fd);
}

// An idle keep-alive connection is not cut at the head deadline (it has sent nothing of a next
// request); a head that has begun must be complete by then.
TEST(ConnectionLimits, HeadDeadlineStartsWithTheRequestNotTheIdleConnection) {
  DaemonOptions o;
  o.args = {"--header-timeout-ms", "200", "--request-timeout-ms", "60000"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const int fd = connect_to(d.socket());
  ASSERT_GE(fd, 0);
  const std::string req = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  char buf[4096];
  ASSERT_GT(::read(fd, buf, sizeof buf), 0);
  ::usleep(600000);  // idle, three head deadlines long
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(status_of(std::string(buf, static_cast<std::size_t>(n))), 200u);
  // A head begun and not finished: 408 naming the deadline.
  ASSERT_EQ(::send(fd, "GET /v1/health HTTP/1.1\r\n", 25, MSG_NOSIGNAL), 25);
  const std::string rest = read_all(fd);
  EXPECT_EQ(status_of(rest), 408u) << rest;
  EXPECT_NE(rest.find("\"param\":\"header-timeout-ms\""), std::string::npos) << rest;
  ::close(fd);
}

}  // namespace
}  // namespace llmd::test
