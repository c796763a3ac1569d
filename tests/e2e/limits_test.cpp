// Bad input against the real daemon: each gets a clear error, never a crash, hang or lost data.
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
  expect_error(call(*c_, "POST", "/v1/completions", std::string(R"({"prompt": "x", "extra": 1e999999})")), 400, "extra");
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

}  // namespace
}  // namespace llmd::test
