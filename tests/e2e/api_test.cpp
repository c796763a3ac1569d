// The HTTP API of the real daemon: both API families, streamed and whole, and sessions.
#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.start()) << daemon_.log(); }
  DaemonProcess daemon_{scratch_dir()};
  client::HttpClient c_ = daemon_.client();
};

TEST_F(ApiTest, HealthModelsStatus) {
  auto h = call(c_, "GET", "/v1/health");
  EXPECT_EQ(h.status, 200u);
  EXPECT_EQ(h.body["status"], "ok");
  auto m = call(c_, "GET", "/v1/models");
  ASSERT_EQ(m.status, 200u);
  EXPECT_EQ(m.body["object"], "list");
  EXPECT_EQ(m.body["data"][0]["object"], "model");
  auto s = call(c_, "GET", "/v1/status");
  ASSERT_EQ(s.status, 200u);
  EXPECT_EQ(s.body["model"]["architecture"], "llama");
  EXPECT_EQ(s.body["slots"].size(), 16u);  // the default
  EXPECT_EQ(s.body["context"]["parallel"], 4);
  EXPECT_TRUE(s.body["caller"]["admin"].get<bool>());  // the tests run as root
}

TEST_F(ApiTest, CompletionStreamedAndWholeAgree) {
  auto body = greedy_body(24);
  body["prompt"] = "Once upon a time";
  auto whole = call(c_, "POST", "/v1/completions", body);
  ASSERT_EQ(whole.status, 200u) << whole.raw;
  EXPECT_EQ(whole.body["object"], "text_completion");
  const std::string text = whole.body["choices"][0]["text"];
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(whole.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole.body["usage"]["completion_tokens"], 24);
  EXPECT_GT(whole.body["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(whole.body["usage"]["total_tokens"].get<int>(),
            whole.body["usage"]["prompt_tokens"].get<int>() + whole.body["usage"]["completion_tokens"].get<int>());

  auto s = stream(c_, "/v1/completions", body);
  ASSERT_EQ(s.status, 200u);
  EXPECT_TRUE(s.done_marker);
  EXPECT_EQ(s.text, text);
  ASSERT_GE(s.events.size(), 2u);
  EXPECT_EQ(s.events.back()["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(s.events.back()["usage"]["completion_tokens"], 24);
  EXPECT_TRUE(s.events.back()["timings"].contains("ttft_ms"));
}

TEST_F(ApiTest, ChatCompletionStreamedAndWholeAgree) {
  auto body = greedy_body(16);
  body["messages"] = {{{"role", "system"}, {"content", "Tell stories."}},
                      {{"role", "user"}, {"content", "Once upon a time"}}};
  body["model"] = "anything";  // one model is served; the field is advisory
  body["user"] = "someone";    // advisory too (an unknown field is a 400: openai_surface_test.cpp)
  auto whole = call(c_, "POST", "/v1/chat/completions", body);
  ASSERT_EQ(whole.status, 200u) << whole.raw;
  EXPECT_EQ(whole.body["object"], "chat.completion");
  EXPECT_EQ(whole.body["choices"][0]["message"]["role"], "assistant");
  const std::string text = whole.body["choices"][0]["message"]["content"];

  auto s = stream(c_, "/v1/chat/completions", body);
  ASSERT_EQ(s.status, 200u);
  EXPECT_TRUE(s.done_marker);
  EXPECT_EQ(s.events.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(s.events.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(s.text, text);
  EXPECT_TRUE(s.events.back().contains("usage"));
}

TEST_F(ApiTest, SessionLifecycleOverHttp) {
  auto created = call(c_, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "Be nice."}, {"app", "e2e"}});
  ASSERT_EQ(created.status, 201u) << created.raw;
  const std::string id = created.body["id"];
  EXPECT_EQ(created.body["app"], "e2e");

  auto body = greedy_body(12);
  body["content"] = "Hello!";
  auto s = stream(c_, "/v1/sessions/" + id + "/messages", body);  // stream defaults to true
  ASSERT_EQ(s.status, 200u);
  EXPECT_TRUE(s.done_marker);
  const auto& last = s.events.back();
  for (const char* t : {"queue_ms", "restore_ms", "prefill_ms", "decode_ms", "ttft_ms"}) {
    EXPECT_TRUE(last["timings"].contains(t)) << t;
  }
  EXPECT_EQ(last["session"], id);

  auto b2 = greedy_body(12);
  b2["content"] = "Tell me more.";
  b2["stream"] = false;
  auto whole = call(c_, "POST", "/v1/sessions/" + id + "/messages", b2);
  ASSERT_EQ(whole.status, 200u) << whole.raw;
  EXPECT_EQ(whole.body["message"]["role"], "assistant");
  EXPECT_GT(whole.body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 0);  // resident

  auto shown = call(c_, "GET", "/v1/sessions/" + id);
  ASSERT_EQ(shown.status, 200u);
  ASSERT_EQ(shown.body["messages"].size(), 5u);
  EXPECT_EQ(shown.body["messages"][1]["content"], "Hello!");
  EXPECT_EQ(shown.body["messages"][2]["content"], s.text);
  EXPECT_EQ(shown.body["messages"][4]["content"], whole.body["message"]["content"]);

  auto list = call(c_, "GET", "/v1/sessions");
  ASSERT_EQ(list.status, 200u);
  ASSERT_EQ(list.body["data"].size(), 1u);
  EXPECT_EQ(list.body["data"][0]["id"], id);

  auto del = call(c_, "DELETE", "/v1/sessions/" + id);
  EXPECT_EQ(del.status, 200u);
  EXPECT_EQ(del.body["deleted"], true);
  EXPECT_EQ(call(c_, "GET", "/v1/sessions/" + id).status, 404u);
}

TEST_F(ApiTest, ChatCompletionWithSessionExtension) {
  const std::string id = call(c_, "POST", "/v1/sessions", std::string()).body["id"];
  auto body = greedy_body(8);
  body["session"] = id;
  body["messages"] = {{{"role", "user"}, {"content", "Hi"}}};
  auto r = call(c_, "POST", "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["session"], id);
  EXPECT_EQ(call(c_, "GET", "/v1/sessions/" + id).body["messages"].size(), 2u);
}

}  // namespace
}  // namespace llmd::test
