// The OpenAI surface over HTTP on the real llmd: no silent drops (a field llmd does not implement
// is a 400 naming it), tool calls (whole, streamed, fed back), structured output, n, logprobs,
// include_usage, models/{id}. The official SDK runs the same surface in tests/compat/.
#include "tests/e2e/e2e_util.h"


namespace llmd::test {
namespace {

using nlohmann::json;

const json kTools = json::array({{{"type", "function"},
                                  {"function",
                                   {{"name", "get_weather"},
                                    {"parameters",
                                     {{"type", "object"},
                                      {"properties", {{"city", {{"type", "string"}}}}},
                                      {"required", {"city"}}}}}}}});

json chat_body(int max_tokens) {
  json b = greedy_body(max_tokens);
  b["messages"] = json::array({{{"role", "user"}, {"content", "What is the weather in Paris?"}}});
  return b;
}

class OpenAiSurface : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    d_ = new DaemonProcess(scratch_dir());
    ASSERT_TRUE(d_->start()) << d_->log();
  }
  static void TearDownTestSuite() {
    delete d_;
    d_ = nullptr;
  }
  static DaemonProcess* d_;
};
DaemonProcess* OpenAiSurface::d_ = nullptr;

TEST_F(OpenAiSurface, AFieldLlmdDoesNotImplementIsA400NamingIt) {
  const auto session = call(d_->client(), "POST", "/v1/sessions", json::object());
  ASSERT_EQ(session.status, 201u) << session.raw;
  const std::string sid = session.body["id"];
  struct Case {
    std::string path;
    json body;
    std::string param;
  };
  json chat = chat_body(2), completion = greedy_body(2), message = greedy_body(2);
  completion["prompt"] = "Once";
  message["content"] = "Hi";
  message["stream"] = false;
  std::vector<Case> cases = {
      {"/v1/chat/completions", chat, "frobnicate"},
      {"/v1/completions", completion, "frobnicate"},
      {"/v1/sessions/" + sid + "/messages", message, "frobnicate"},
      {"/v1/completions", completion, "suffix"},
      {"/v1/completions", completion, "echo"},
      {"/v1/chat/completions", chat, "functions"},
      {"/v1/chat/completions", chat, "reasoning_effort"},
  };
  for (auto& c : cases) {
    c.body[c.param] = 1;
    const auto r = call(d_->client(), "POST", c.path, c.body);
    EXPECT_EQ(r.status, 400u) << c.path << " " << c.param << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["param"], c.param) << r.raw;
  }
  // Inside a field: the field is named.
  json nested = chat_body(2);
  nested["messages"][0]["audio"] = json::object();
  EXPECT_EQ(call(d_->client(), "POST", "/v1/chat/completions", nested).body["error"]["param"], "messages");
  nested = chat_body(2);
  nested["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"schema", json::object()}, {"x", 1}}}};
  EXPECT_EQ(call(d_->client(), "POST", "/v1/chat/completions", nested).body["error"]["param"], "response_format");
  nested = chat_body(2);
  nested["messages"][0]["role"] = "wizard";
  EXPECT_EQ(call(d_->client(), "POST", "/v1/chat/completions", nested).body["error"]["param"], "messages");
  // Advisory fields are accepted.
  json advisory = chat_body(2);
  advisory["user"] = "u-1";
  advisory["metadata"] = {{"k", "v"}};
  advisory["store"] = false;
  advisory["model"] = "anything";
  EXPECT_EQ(call(d_->client(), "POST", "/v1/chat/completions", advisory).status, 200u);
  // A session turn's tool results are well formed.
  json bad_result = chat_body(2);
  bad_result["session"] = sid;
  bad_result["messages"] = json::array({{{"role", "tool"}, {"content", 5}}});
  EXPECT_EQ(call(d_->client(), "POST", "/v1/chat/completions", bad_result).body["error"]["param"], "messages");
  json bad_results = greedy_body(2);
  bad_results["tool_results"] = json::array({{{"tool_call_id", "a"}, {"content", "x"}, {"extra", 1}}});
  EXPECT_EQ(call(d_->client(), "POST", "/v1/sessions/" + sid + "/messages", bad_results).body["error"]["param"],
            "tool_results");
}

TEST_F(OpenAiSurface, ARequiredToolCallComesBackWholeStreamedAndFedBack) {
  json body = chat_body(200);
  body["tools"] = kTools;
  body["tool_choice"] = "required";
  const auto r = call(d_->client(), "POST", "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200u) << r.raw;
  const json& choice = r.body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls") << r.raw;
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u) << r.raw;
  const json& call0 = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call0["type"], "function");
  EXPECT_EQ(call0["function"]["name"], "get_weather");
  const json args = json::parse(call0["function"]["arguments"].get<std::string>());
  EXPECT_TRUE(args["city"].is_string());
  EXPECT_TRUE(choice["message"]["content"].is_null());

  // Streamed: the call arrives as deltas by index (id and name first), then finish_reason.
  const auto s = stream(d_->client(), "/v1/chat/completions", body);
  ASSERT_EQ(s.status, 200u);
  std::string id, name, arguments, finish;
  for (const auto& ev : s.events) {
    const json& c = ev["choices"][0];
    if (c.contains("delta") && c["delta"].contains("tool_calls")) {
      const json& d = c["delta"]["tool_calls"][0];
      EXPECT_EQ(d["index"], 0);
      if (d.contains("id")) {
        EXPECT_TRUE(id.empty());
        id = d["id"];
        name = d["function"]["name"];
      }
      arguments += d["function"]["arguments"].get<std::string>();
    }
    if (c["finish_reason"].is_string()) finish = c["finish_reason"];
  }
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(name, "get_weather");
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(json::parse(arguments), args);  // greedy: the same call

  // The result fed back: an answer.
  json next = chat_body(16);
  next["tools"] = kTools;
  next["messages"].push_back({{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array({call0})}});
  next["messages"].push_back({{"role", "tool"}, {"tool_call_id", call0["id"]}, {"content", "Sunny, 21 C"}});
  const auto answer = call(d_->client(), "POST", "/v1/chat/completions", next);
  EXPECT_EQ(answer.status, 200u) << answer.raw;
}

// Tools in a session: they are the session's (stored, rendered into every turn the same way, so
// the KV of earlier turns is reused), a turn brings the tools' results, and both are part of the
// transcript. A change of tools re-renders the session.
TEST_F(OpenAiSurface, ASessionHasToolsAndTakesTheirResults) {
  const auto created = call(d_->client(), "POST", "/v1/sessions", json{{"system_prompt", "You help with the weather."}});
  // (A field POST /v1/sessions does not know is refused, naming it.)
  EXPECT_EQ(call(d_->client(), "POST", "/v1/sessions", json{{"system", "x"}}).body["error"]["param"], "system");
  ASSERT_EQ(created.status, 201u) << created.raw;
  const std::string id = created.body["id"];
  const std::string path = "/v1/sessions/" + id + "/messages";

  json ask = greedy_body(200);
  ask["stream"] = false;
  ask["content"] = "What is the weather in Paris?";
  ask["tools"] = kTools;
  ask["tool_choice"] = "required";
  const auto first = call(d_->client(), "POST", path, ask);
  ASSERT_EQ(first.status, 200u) << first.raw;
  EXPECT_EQ(first.body["finish_reason"], "tool_calls") << first.raw;
  ASSERT_EQ(first.body["message"]["tool_calls"].size(), 1u) << first.raw;
  const json& call0 = first.body["message"]["tool_calls"][0];
  EXPECT_EQ(call0["function"]["name"], "get_weather");
  EXPECT_TRUE(json::parse(call0["function"]["arguments"].get<std::string>())["city"].is_string());

  // Bad turns: both a message and results; results where the session does not end with an answer.
  json both = greedy_body(8);
  both["content"] = "hi";
  both["tool_results"] = json::array({{{"tool_call_id", call0["id"]}, {"content", "Sunny"}}});
  EXPECT_EQ(call(d_->client(), "POST", path, both).body["error"]["param"], "tool_results");

  // The result fed back, the session's tools kept (not sent again): the earlier turn's KV is reused.
  json result = greedy_body(24);
  result["stream"] = false;
  result["tool_results"] = json::array({{{"tool_call_id", call0["id"]}, {"content", "Sunny, 21 C"}}});
  const auto second = call(d_->client(), "POST", path, result);
  ASSERT_EQ(second.status, 200u) << second.raw;
  // The session's tools still apply (tool_choice auto): the answer is the generic format's JSON.
  const auto raw = call(d_->client(), "GET", "/v1/sessions/" + id, json()).body["messages"].back()["content"];
  EXPECT_EQ(raw.get<std::string>().rfind("{", 0), 0u) << second.raw;
  EXPECT_GE(second.body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(),
            first.body["usage"]["prompt_tokens"].get<int>())
      << second.raw;

  // The transcript holds the call and the result.
  const auto got = call(d_->client(), "GET", "/v1/sessions/" + id, json());
  ASSERT_EQ(got.status, 200u);
  std::vector<std::string> roles;
  for (const auto& m : got.body["messages"]) roles.push_back(m["role"]);
  EXPECT_EQ(roles, (std::vector<std::string>{"system", "user", "assistant", "tool", "assistant"})) << got.raw;

  // Other tools: the session is re-rendered with them, and the named one is called.
  json other = kTools;
  other[0]["function"]["name"] = "get_time";
  json again = ask;
  again["content"] = "And what time is it in Paris?";
  again["tools"] = other;
  const auto third = call(d_->client(), "POST", path, again);
  ASSERT_EQ(third.status, 200u) << third.raw;
  ASSERT_EQ(third.body["message"]["tool_calls"].size(), 1u) << third.raw;
  EXPECT_EQ(third.body["message"]["tool_calls"][0]["function"]["name"], "get_time");

  // A session without a system prompt: its tools get an empty one (never stored); cleared with
  // tools: [], the session renders without either, and goes on reusing its KV.
  const auto bare = call(d_->client(), "POST", "/v1/sessions", json::object());
  const std::string bare_path = "/v1/sessions/" + bare.body["id"].get<std::string>() + "/messages";
  ASSERT_EQ(call(d_->client(), "POST", bare_path, ask).body["finish_reason"], "tool_calls");
  json cleared = greedy_body(8);
  cleared["stream"] = false;
  cleared["content"] = "Tell me a story.";
  cleared["tools"] = json::array();
  const auto plain = call(d_->client(), "POST", bare_path, cleared);
  ASSERT_EQ(plain.status, 200u) << plain.raw;
  EXPECT_FALSE(plain.body["message"].contains("tool_calls")) << plain.raw;
  cleared.erase("tools");
  cleared["content"] = "And then?";
  const auto after = call(d_->client(), "POST", bare_path, cleared);
  ASSERT_EQ(after.status, 200u) << after.raw;
  EXPECT_GE(after.body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(),
            plain.body["usage"]["prompt_tokens"].get<int>())
      << after.raw;
  const auto shown = call(d_->client(), "GET", "/v1/sessions/" + bare.body["id"].get<std::string>(), json());
  EXPECT_EQ(shown.body["messages"][0]["role"], "user") << shown.raw;

  // The chat completions extension: a trailing tool message continues the session.
  json ext = greedy_body(8);
  ext["session"] = id;
  ext["messages"] = json::array({{{"role", "tool"}, {"tool_call_id", "x"}, {"content", "12:00"}}});
  EXPECT_EQ(call(d_->client(), "POST", "/v1/chat/completions", ext).status, 200u);
  // Results on a session that does not end with an answer.
  const auto fresh = call(d_->client(), "POST", "/v1/sessions", json::object());
  EXPECT_EQ(call(d_->client(), "POST", "/v1/sessions/" + fresh.body["id"].get<std::string>() + "/messages", result)
                .body["error"]["param"],
            "messages");
}

TEST_F(OpenAiSurface, StructuredOutputNLogprobsAndUsageChunks) {
  json body = chat_body(300);
  body["response_format"] = {
      {"type", "json_schema"},
      {"json_schema",
       {{"name", "person"},
        {"strict", true},
        {"schema",
         {{"type", "object"},
          {"properties", {{"name", {{"type", "string"}}}, {"age", {{"type", "integer"}}}}},
          {"required", {"name", "age"}}}}}}};
  auto r = call(d_->client(), "POST", "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200u) << r.raw;
  const json answer = json::parse(r.body["choices"][0]["message"]["content"].get<std::string>(), nullptr, false);
  ASSERT_TRUE(answer.is_object()) << r.raw;
  EXPECT_TRUE(answer["name"].is_string());
  EXPECT_TRUE(answer["age"].is_number_integer());

  json two = chat_body(8);
  two["n"] = 2;
  // A prompt no earlier request had: nothing of it is cached before this request.
  two["messages"] = json::array({{{"role", "user"}, {"content", "Once upon a time a small red fox found a boat."}}});
  two["temperature"] = 1.0;
  two["seed"] = 5;
  two["logprobs"] = true;
  two["top_logprobs"] = 2;
  r = call(d_->client(), "POST", "/v1/chat/completions", two);
  ASSERT_EQ(r.status, 200u) << r.raw;
  ASSERT_EQ(r.body["choices"].size(), 2u);
  int completion = 0;
  for (int i = 0; i < 2; ++i) {
    const json& c = r.body["choices"][i];
    EXPECT_EQ(c["index"], i);
    const json& content = c["logprobs"]["content"];
    ASSERT_TRUE(content.is_array());
    completion += static_cast<int>(content.size());
    for (const auto& e : content) {
      EXPECT_LE(e["logprob"].get<double>(), 0.0);
      EXPECT_EQ(e["top_logprobs"].size(), 2u);
    }
  }
  EXPECT_EQ(r.body["usage"]["completion_tokens"], completion);
  // The second choice shares the first one's prompt KV instead of computing it again (all but
  // the prompt's last token, which it decodes itself to sample from).
  const int prompt = r.body["usage"]["prompt_tokens"].get<int>();
  ASSERT_EQ(r.body["usage"]["choices_cached_tokens"].size(), 2u) << r.raw;
  EXPECT_GE(r.body["usage"]["choices_cached_tokens"][1].get<int>(), prompt - 1) << r.raw;

  json usage = chat_body(8);
  usage["stream_options"] = {{"include_usage", true}};
  const auto s = stream(d_->client(), "/v1/chat/completions", usage);
  ASSERT_GE(s.events.size(), 2u);
  EXPECT_TRUE(s.events.back()["choices"].empty());
  EXPECT_GT(s.events.back()["usage"]["completion_tokens"].get<int>(), 0);
  EXPECT_TRUE(s.events[s.events.size() - 2]["choices"][0]["finish_reason"].is_string());
  EXPECT_FALSE(s.events[s.events.size() - 2].contains("usage"));
  // Without stream: stream_options is refused, naming it.
  usage["stream"] = false;
  EXPECT_EQ(call(d_->client(), "POST", "/v1/chat/completions", usage).body["error"]["param"], "stream_options");
}

TEST_F(OpenAiSurface, TheModelHasItsOwnEndpointAndARealCreated) {
  const auto list = call(d_->client(), "GET", "/v1/models");
  ASSERT_EQ(list.status, 200u);
  const std::string id = list.body["data"][0]["id"];
  EXPECT_GT(list.body["data"][0]["created"].get<std::int64_t>(), 1600000000);
  const auto one = call(d_->client(), "GET", "/v1/models/" + id);
  EXPECT_EQ(one.status, 200u);
  EXPECT_EQ(one.body["id"], id);
  const auto other = call(d_->client(), "GET", "/v1/models/gpt-4o");
  EXPECT_EQ(other.status, 404u);
  EXPECT_EQ(other.body["error"]["code"], "model_not_found");
}

// TinyStories-656K's vocabulary has no byte tokens: a character it cannot encode made llama.cpp
// throw on the storage thread, which ended the daemon. Now: a 400, and the daemon serves on.
TEST(TinyVocab, UnencodableIs400) {
  DaemonOptions o;
  o.model = tinystories_path();
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  json body = greedy_body(8);
  body["messages"] = json::array({{{"role", "user"}, {"content", "a (b) c"}}});
  const auto r = call(d.client(), "POST", "/v1/chat/completions", body);
  EXPECT_EQ(r.status, 400u) << r.raw;
  EXPECT_EQ(call(d.client(), "GET", "/v1/health").status, 200u);
  json schema = chat_body(200);
  schema["response_format"] = {{"type", "json_schema"},
                               {"json_schema",
                                {{"name", "x"},
                                 {"schema",
                                  {{"type", "object"},
                                   {"properties", {{"city", {{"type", "string"}}}}},
                                   {"required", {"city"}}}}}}};
  // Its vocabulary has no "{": a JSON answer is impossible, and said so before anything runs.
  const auto s = call(d.client(), "POST", "/v1/chat/completions", schema);
  EXPECT_EQ(s.status, 400u) << s.raw;
  EXPECT_EQ(s.body["error"]["param"], "response_format") << s.raw;
  EXPECT_EQ(call(d.client(), "GET", "/v1/health").status, 200u);
}

}  // namespace
}  // namespace llmd::test
