// Errors as clients see them, from the real llmd: the structured fields an error carries from where
// it is born (param, limit, actual beside OpenAI's message, type and code), and the shutdown drain
// answering every request it has read.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <thread>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

// One answer read from a keep-alive connection: the status and body (Content-Length framed), or
// status 0 if the connection closed (or went quiet) before a whole answer came.
struct RawAnswer {
  unsigned status = 0;
  std::string body;
};

RawAnswer read_answer(int fd, std::string& buffered) {
  char buf[4096];
  const auto fill = [&] {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 60000) <= 0) return false;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    buffered.append(buf, static_cast<std::size_t>(n));
    return true;
  };
  std::size_t head_end;
  while ((head_end = buffered.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return {};
  }
  const std::string head = buffered.substr(0, head_end);
  std::size_t length = 0;
  for (const char* name : {"Content-Length: ", "content-length: "}) {
    if (const auto at = head.find(name); at != std::string::npos) length = std::stoul(head.substr(at + std::strlen(name)));
  }
  while (buffered.size() < head_end + 4 + length) {
    if (!fill()) return {};
  }
  RawAnswer a;
  if (head.rfind("HTTP/1.1 ", 0) == 0) a.status = static_cast<unsigned>(std::stoul(head.substr(9, 3)));
  a.body = buffered.substr(head_end + 4, length);
  buffered.erase(0, head_end + 4 + length);
  return a;
}

std::string http_request(const std::string& method, const std::string& path, const std::string& body = {}) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: llmd\r\n";
  if (!body.empty()) r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

const nlohmann::json& error_of(const JsonReply& r) { return r.body["error"]; }

TEST(ErrorFields, ContextLengthExceededNamesTheFieldAndTheLimit) {
  DaemonOptions o;
  o.args = {"--ctx", "256"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto status = call(d.client(), "GET", "/v1/status");
  const std::uint64_t context = status.body["context"]["max_session_tokens"].get<std::uint64_t>();

  auto r = call(d.client(), "POST", "/v1/completions", nlohmann::json{{"prompt", std::string(1500, 'a')}, {"max_tokens", 4}});
  EXPECT_EQ(r.status, 400u) << r.raw;
  EXPECT_EQ(error_of(r)["code"], "context_length_exceeded") << r.raw;
  EXPECT_EQ(error_of(r)["type"], "invalid_request_error") << r.raw;
  EXPECT_EQ(error_of(r)["param"], "prompt") << r.raw;
  EXPECT_EQ(error_of(r)["limit"], context) << r.raw;
  EXPECT_GE(error_of(r)["actual"].get<std::uint64_t>(), context) << r.raw;
  EXPECT_EQ(error_of(r)["message"].get<std::string>().rfind("context_length_exceeded: the prompt has ", 0), 0u) << r.raw;

  nlohmann::json chat = {{"messages", {{{"role", "user"}, {"content", std::string(1500, 'a')}}}}, {"max_tokens", 4}};
  r = call(d.client(), "POST", "/v1/chat/completions", chat);
  EXPECT_EQ(r.status, 400u) << r.raw;
  EXPECT_EQ(error_of(r)["code"], "context_length_exceeded") << r.raw;
  EXPECT_EQ(error_of(r)["param"], "messages") << r.raw;
}

TEST(ErrorFields, LimitsAndFieldsAreNamed) {
  DaemonOptions o;
  o.args = {"--max-sessions-per-user", "1"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  ASSERT_EQ(call(d.client(), "POST", "/v1/sessions", nlohmann::json::object()).status, 201u);
  auto r = call(d.client(), "POST", "/v1/sessions", nlohmann::json::object());
  EXPECT_EQ(r.status, 429u) << r.raw;
  EXPECT_EQ(error_of(r)["code"], "limit_exceeded") << r.raw;
  EXPECT_EQ(error_of(r)["param"], "max-sessions-per-user") << r.raw;
  EXPECT_EQ(error_of(r)["limit"], 1) << r.raw;
  EXPECT_EQ(error_of(r)["actual"], 1) << r.raw;
  EXPECT_NE(error_of(r)["message"].get<std::string>().find("(limit max-sessions-per-user = 1)"), std::string::npos);

  // A bad field is named in param, from the reader that refused it.
  const std::vector<std::pair<nlohmann::json, std::string>> bad = {
      {{{"prompt", "x"}, {"max_tokens", 0}}, "max_tokens"},
      {{{"prompt", "x"}, {"temperature", "hot"}}, "temperature"},
      {{{"prompt", "x"}, {"priority", "urgent"}}, "priority"},
      {{{"prompt", "x"}, {"app", "no spaces allowed"}}, "app"},
  };
  for (const auto& [body, field] : bad) {
    r = call(d.client(), "POST", "/v1/completions", body);
    EXPECT_EQ(r.status, 400u) << r.raw;
    EXPECT_EQ(error_of(r)["code"], "invalid_request") << r.raw;
    EXPECT_EQ(error_of(r)["param"], field) << r.raw;
  }
  // An error without a field or limit keeps param null and has no numbers.
  r = call(d.client(), "GET", "/v1/sessions/ses_000000000000000000000000");
  EXPECT_EQ(r.status, 404u) << r.raw;
  EXPECT_TRUE(error_of(r)["param"].is_null()) << r.raw;
  EXPECT_FALSE(error_of(r).contains("limit")) << r.raw;
}

// SIGTERM while a long generation runs: llmd stops accepting connections, but the requests that
// arrive on connections already open during the drain are each answered, with a result (reads) or
// 503 (anything new). A second SIGTERM cancels the generation and llmd exits cleanly (before, the
// second signal's shutdown callback replaced the first one's, and llmd never exited).
TEST(ShutdownDrain, RequestsDuringTheDrainAreAllAnswered) {
  DaemonOptions o;
  o.args = {"--shutdown-timeout-ms", "600000", "--ctx", "8192"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto created = call(d.client(), "POST", "/v1/sessions", nlohmann::json::object());
  ASSERT_EQ(created.status, 201u) << created.raw;
  const std::string id = created.body["id"];
  const auto idle = call(d.client(), "POST", "/v1/sessions", nlohmann::json::object());
  ASSERT_EQ(idle.status, 201u) << idle.raw;
  const std::string idle_id = idle.body["id"];
  const int context = call(d.client(), "GET", "/v1/status").body["context"]["max_session_tokens"].get<int>();

  // Connections opened before the signal (new ones are refused once llmd is stopping).
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) fds.push_back(connect_to(d.socket()));
  for (int fd : fds) ASSERT_GE(fd, 0);

  // The long generation: as long as the context allows; the grace period is longer than the test.
  std::atomic<bool> streaming{false};
  std::thread generation([&] {
    nlohmann::json body = {{"content", "Once upon a time"}, {"max_tokens", context - 64}, {"ignore_eos", true},
                           {"stream", true}};
    client::HttpClient c = d.client();
    (void)c.request("POST", "/v1/sessions/" + id + "/messages", body.dump(), [&](const std::string&) {
      streaming = true;
      return true;
    });
  });
  while (!streaming) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(::kill(d.pid(), SIGTERM), 0);
  // Wait until llmd says it is stopping (it has begun the drain) before asking.
  for (int i = 0; i < 1000; ++i) {
    bool stopping = false;
    for (const auto& n : d.notifications(std::chrono::milliseconds(10))) stopping = stopping || n.find("STOPPING=1") != std::string::npos;
    if (stopping) break;
  }

  const std::vector<std::pair<std::string, std::string>> asks = {
      {"GET", "/v1/health"},
      {"GET", "/v1/sessions"},
      {"GET", "/v1/sessions/" + idle_id},
      {"GET", "/v1/status"},
      {"POST", "/v1/sessions"},
      {"POST", "/v1/completions"},
      {"POST", "/v1/sessions/" + idle_id + "/messages"},
  };
  std::vector<std::thread> askers;
  std::vector<std::vector<RawAnswer>> answers(fds.size());
  for (std::size_t c = 0; c < fds.size(); ++c) {
    askers.emplace_back([&, c] {
      std::string buffered;
      for (const auto& [method, path] : asks) {
        const std::string body = method == "POST" ? (path == "/v1/completions" ? R"({"prompt":"hi","max_tokens":2})"
                                                    : path == "/v1/sessions"     ? "{}"
                                                                                 : R"({"content":"hi","max_tokens":2})")
                                                  : "";
        const std::string req = http_request(method, path, body);
        if (::send(fds[c], req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
          answers[c].push_back({});
          return;
        }
        answers[c].push_back(read_answer(fds[c], buffered));
      }
    });
  }
  for (auto& t : askers) t.join();
  for (std::size_t c = 0; c < fds.size(); ++c) {
    ASSERT_EQ(answers[c].size(), asks.size());
    for (std::size_t i = 0; i < asks.size(); ++i) {
      const RawAnswer& a = answers[c][i];
      const std::string what = asks[i].first + " " + asks[i].second + " on connection " + std::to_string(c);
      EXPECT_NE(a.status, 0u) << what << " was not answered\n" << d.log();
      if (asks[i].first == "POST" || asks[i].second == "/v1/health") {
        EXPECT_EQ(a.status, 503u) << what << ": " << a.body;  // nothing new once stopping
      } else {
        EXPECT_EQ(a.status, 200u) << what << ": " << a.body;
      }
    }
    ::close(fds[c]);
  }
  const int exit_status = d.stop(SIGTERM);
  generation.join();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status << "\n" << d.log();
}

}  // namespace
}  // namespace llmd::test
