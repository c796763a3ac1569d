// POST /v1/responses and GET /v1/responses/{id} (OpenAI's Responses API) against the real daemon
// and model: the response object's shape, input as text and as items with instructions, the
// streamed events (names, order, sequence numbers), previous_response_id continuing a stored
// conversation with its KV (cached tokens) and branching from an older response, the owner check,
// text.format json_schema, tools with tool_choice required, and strict fields. The model is tiny:
// assertions are about structure and validity, never wording.
#include <set>
#include <sstream>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

nlohmann::json greedy(nlohmann::json body, int max_output_tokens = 12) {
  body["temperature"] = 0;
  body["max_output_tokens"] = max_output_tokens;
  return body;
}

JsonReply respond(const client::HttpClient& c, const nlohmann::json& body) {
  return call(c, "POST", "/v1/responses", body);
}

// The whole shape of a finished response object.
void expect_response_shape(const nlohmann::json& j) {
  ASSERT_TRUE(j.is_object()) << j;
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("resp_")) << j;
  EXPECT_EQ(j["object"], "response");
  EXPECT_TRUE(j["created_at"].is_number_integer());
  EXPECT_TRUE(j["status"] == "completed" || j["status"] == "incomplete") << j;
  if (j["status"] == "incomplete") {
    EXPECT_EQ(j["incomplete_details"]["reason"], "max_output_tokens");
  }
  EXPECT_TRUE(j["model"].is_string());
  ASSERT_TRUE(j["output"].is_array());
  ASSERT_FALSE(j["output"].empty());
  std::string text;
  for (const auto& item : j["output"]) {
    EXPECT_TRUE(item["id"].is_string());
    EXPECT_TRUE(item["status"].is_string());
    if (item["type"] == "message") {
      EXPECT_EQ(item["role"], "assistant");
      ASSERT_EQ(item["content"].size(), 1u);
      EXPECT_EQ(item["content"][0]["type"], "output_text");
      EXPECT_TRUE(item["content"][0]["annotations"].is_array());
      text += item["content"][0]["text"].get<std::string>();
    } else {
      EXPECT_EQ(item["type"], "function_call") << item;
      EXPECT_TRUE(item["call_id"].is_string());
      EXPECT_TRUE(item["name"].is_string());
      EXPECT_TRUE(item["arguments"].is_string());
    }
  }
  EXPECT_EQ(j["output_text"], text);
  const auto& u = j["usage"];
  EXPECT_GT(u["input_tokens"].get<int>(), 0) << j;
  EXPECT_GT(u["output_tokens"].get<int>(), 0) << j;
  EXPECT_EQ(u["total_tokens"].get<int>(), u["input_tokens"].get<int>() + u["output_tokens"].get<int>());
  EXPECT_LE(u["input_tokens_details"]["cached_tokens"].get<int>(), u["input_tokens"].get<int>());
  EXPECT_EQ(u["output_tokens_details"]["reasoning_tokens"], 0);
  EXPECT_TRUE(j.contains("previous_response_id"));
  EXPECT_TRUE(j["tools"].is_array());
  EXPECT_TRUE(j["text"]["format"].is_object());
  EXPECT_TRUE(j["store"].is_boolean());
}

// A raw streamed exchange: each event's name and data.
struct SseEvent {
  std::string name;
  nlohmann::json data;
};
std::vector<SseEvent> stream_events(const std::string& sock, nlohmann::json body, unsigned* status) {
  body["stream"] = true;
  const std::string b = body.dump();
  const std::string raw = raw_exchange(sock, "POST /v1/responses HTTP/1.1\r\nHost: llmd\r\nContent-Type: application/json\r\n"
                                             "Content-Length: " + std::to_string(b.size()) + "\r\nConnection: close\r\n\r\n" + b);
  *status = static_cast<unsigned>(std::atoi(raw.substr(9, 3).c_str()));
  std::vector<SseEvent> out;
  std::istringstream in(raw.substr(raw.find("\r\n\r\n") + 4));
  std::string line, name;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.starts_with("event: ")) name = line.substr(7);
    if (line.starts_with("data: ")) {
      out.push_back({name, nlohmann::json::parse(line.substr(6), nullptr, false)});
      name.clear();
    }
  }
  return out;
}

TEST(Responses, TextInputAnswersTheWholeShapeAndIsStored) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  auto r = respond(c, greedy({{"input", "Once upon a time"}}));
  ASSERT_EQ(r.status, 200u) << r.raw;
  expect_response_shape(r.body);
  EXPECT_EQ(r.body["store"], true);
  EXPECT_TRUE(r.body["previous_response_id"].is_null());
  EXPECT_TRUE(r.body["session"].is_string());
  // Stored: GET answers it, with the same text.
  auto g = call(c, "GET", "/v1/responses/" + r.body["id"].get<std::string>());
  ASSERT_EQ(g.status, 200u) << g.raw;
  EXPECT_EQ(g.body["id"], r.body["id"]);
  EXPECT_EQ(g.body["object"], "response");
  EXPECT_EQ(g.body["output_text"], r.body["output_text"]);
  EXPECT_EQ(g.body["output"][0]["id"], r.body["output"][0]["id"]);
  // Not stored: answered all the same, not retrievable.
  auto s = respond(c, greedy({{"input", "Once upon a time"}, {"store", false}}));
  ASSERT_EQ(s.status, 200u) << s.raw;
  expect_response_shape(s.body);
  EXPECT_EQ(s.body["store"], false);
  EXPECT_EQ(s.body["output_text"], r.body["output_text"]);  // greedy, same prompt
  EXPECT_EQ(call(c, "GET", "/v1/responses/" + s.body["id"].get<std::string>()).status, 404u);
  EXPECT_EQ(call(c, "GET", "/v1/responses/resp_nope").status, 404u);
  // A new conversation whose turn is refused leaves no session behind (and names the input).
  const auto sessions = call(c, "GET", "/v1/sessions").body["data"].size();
  std::string huge;
  for (int i = 0; i < 1500; ++i) huge += "Once upon a time ";
  auto big = respond(c, greedy({{"input", huge}}));
  EXPECT_EQ(big.status, 400u) << big.raw;
  EXPECT_EQ(big.body["error"]["param"], "input") << big.raw;
  EXPECT_EQ(call(c, "GET", "/v1/sessions").body["data"].size(), sessions);
}

TEST(Responses, MessageItemsWithInstructions) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  // One user message (parts): stored, the instructions as the session's system prompt.
  nlohmann::json input = nlohmann::json::array(
      {{{"role", "user"}, {"content", nlohmann::json::array({{{"type", "input_text"}, {"text", "Tell me a story."}}})}}});
  auto r = respond(c, greedy({{"input", input}, {"instructions", "You tell stories."}}));
  ASSERT_EQ(r.status, 200u) << r.raw;
  expect_response_shape(r.body);
  EXPECT_EQ(r.body["instructions"], "You tell stories.");
  EXPECT_EQ(r.body["store"], true);
  auto s = call(c, "GET", "/v1/sessions/" + r.body["session"].get<std::string>());
  ASSERT_EQ(s.status, 200u) << s.raw;
  ASSERT_EQ(s.body["messages"].size(), 3u) << s.raw;
  EXPECT_EQ(s.body["messages"][0]["content"], "You tell stories.");
  // A conversation given whole (items, an earlier answer fed back): a stateless turn, not stored.
  input.push_back({{"type", "message"}, {"role", "assistant"}, {"id", "msg_x"}, {"status", "completed"},
                   {"content", nlohmann::json::array({{{"type", "output_text"}, {"text", "Once"}, {"annotations", nlohmann::json::array()}}})}});
  input.push_back({{"role", "user"}, {"content", "And then?"}});
  auto m = respond(c, greedy({{"input", input}, {"instructions", "You tell stories."}}));
  ASSERT_EQ(m.status, 200u) << m.raw;
  expect_response_shape(m.body);
  EXPECT_EQ(m.body["store"], false);
  // Asked to store it: refused, naming what prevents it.
  auto refused = respond(c, greedy({{"input", input}, {"store", true}}));
  EXPECT_EQ(refused.status, 400u) << refused.raw;
  EXPECT_EQ(refused.body["error"]["param"], "input");
}

TEST(Responses, StreamedEventsInOrderWithSequenceNumbers) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  unsigned status = 0;
  auto events = stream_events(d.socket(), greedy({{"input", "Once upon a time"}}, 16), &status);
  ASSERT_EQ(status, 200u);
  ASSERT_GE(events.size(), 9u);
  std::vector<std::string> names;
  std::string deltas;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    ASSERT_FALSE(e.data.is_discarded()) << i;
    EXPECT_EQ(e.name, e.data["type"]) << i;
    EXPECT_EQ(e.data["sequence_number"], i);
    if (names.empty() || names.back() != e.name) names.push_back(e.name);
    if (e.name == "response.output_text.delta") deltas += e.data["delta"].get<std::string>();
  }
  const std::string last = events.back().name;
  const std::vector<std::string> expected = {"response.created", "response.in_progress", "response.output_item.added",
                                             "response.content_part.added", "response.output_text.delta",
                                             "response.output_text.done", "response.content_part.done",
                                             "response.output_item.done", last};
  EXPECT_EQ(names, expected);
  EXPECT_TRUE(last == "response.completed" || last == "response.incomplete") << last;
  const auto& done = events.back().data["response"];
  expect_response_shape(done);
  EXPECT_EQ(done["output_text"], deltas);
  EXPECT_EQ(events[0].data["response"]["status"], "in_progress");
  EXPECT_EQ(events[0].data["response"]["id"], done["id"]);
  // The same request not streamed: the same text.
  auto whole = respond(d.client(), greedy({{"input", "Once upon a time"}, {"store", false}}, 16));
  ASSERT_EQ(whole.status, 200u) << whole.raw;
  EXPECT_EQ(whole.body["output_text"], deltas);
  // A bad request is an HTTP error before any event.
  auto bad = stream_events(d.socket(), {{"input", 7}}, &status);
  EXPECT_EQ(status, 400u);
}

// A turn that fails after the stream began (llmd stops with no grace): an "error" event, then
// response.failed, numbered on.
TEST(Responses, AFailureMidStreamIsAnErrorEventThenResponseFailed) {
  DaemonOptions options;
  options.args = {"--shutdown-timeout-ms", "0"};
  DaemonProcess d(scratch_dir(), options);
  ASSERT_TRUE(d.start()) << d.log();
  std::vector<nlohmann::json> events;
  bool signalled = false;
  client::HttpClient c = d.client();
  const nlohmann::json body = {{"input", "Once upon a time"}, {"max_output_tokens", 1900}, {"ignore_eos", true}, {"stream", true}};
  auto r = c.request("POST", "/v1/responses", body.dump(), [&](const std::string& data) {
    events.push_back(nlohmann::json::parse(data, nullptr, false));
    if (!signalled && events.back().value("type", "") == "response.output_text.delta") {
      signalled = true;
      ::kill(d.pid(), SIGTERM);
    }
    return true;
  });
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_TRUE(signalled) << d.log();
  ASSERT_GE(events.size(), 3u);
  for (std::size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i]["sequence_number"], i) << events[i];
  const auto& error = events[events.size() - 2];
  const auto& failed = events.back();
  EXPECT_EQ(error["type"], "error") << error;
  EXPECT_TRUE(error["message"].is_string());
  EXPECT_TRUE(error.contains("code"));
  EXPECT_EQ(failed["type"], "response.failed") << failed;
  EXPECT_EQ(failed["response"]["status"], "failed");
  EXPECT_TRUE(failed["response"]["error"]["message"].is_string());
}

TEST(Responses, PreviousResponseIdContinuesTheSessionWithItsKv) {
  // Flash attention off: where a sequence's cells lie in the KV pool does not change its values, so
  // a branch recomputed or restored answers exactly as the original did (ARCHITECTURE.md, "Exactness").
  DaemonOptions options;
  options.args = {"--slots", "2", "--flash-attn", "off"};
  DaemonProcess d(scratch_dir(), options);
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  auto first = respond(c, greedy({{"input", "Tell me a story."}, {"instructions", "You tell stories."}}));
  ASSERT_EQ(first.status, 200u) << first.raw;
  const std::string id1 = first.body["id"];
  auto second = respond(c, greedy({{"input", "What happened next?"}, {"previous_response_id", id1}}));
  ASSERT_EQ(second.status, 200u) << second.raw;
  expect_response_shape(second.body);
  EXPECT_EQ(second.body["previous_response_id"], id1);
  EXPECT_EQ(second.body["session"], first.body["session"]);
  EXPECT_EQ(second.body["instructions"], nullptr);  // not sent again; the conversation keeps its own
  const auto& u = second.body["usage"];
  EXPECT_GT(u["input_tokens_details"]["cached_tokens"].get<int>(), 0) << second.raw;
  EXPECT_GT(u["input_tokens"].get<int>(), first.body["usage"]["input_tokens"].get<int>());
  const std::string id2 = second.body["id"];
  auto g = call(c, "GET", "/v1/responses/" + id2);
  ASSERT_EQ(g.status, 200u) << g.raw;
  EXPECT_EQ(g.body["previous_response_id"], id1);
  EXPECT_EQ(g.body["output_text"], second.body["output_text"]);
  EXPECT_EQ(g.body["instructions"], "You tell stories.");

  // From the first response again: a branch in a fork of the session; the original is untouched,
  // and the branch answers as the original did (greedy, the same history and message).
  auto branch = respond(c, greedy({{"input", "What happened next?"}, {"previous_response_id", id1}}));
  ASSERT_EQ(branch.status, 200u) << branch.raw;
  EXPECT_NE(branch.body["session"], first.body["session"]);
  EXPECT_EQ(branch.body["output_text"], second.body["output_text"]);
  EXPECT_EQ(call(c, "GET", "/v1/responses/" + id2).body["output_text"], second.body["output_text"]);
  // Different instructions continue statelessly (not stored), or are refused with store: true.
  auto other = respond(c, greedy({{"input", "And then?"}, {"previous_response_id", id2}, {"instructions", "Be brief."}}));
  ASSERT_EQ(other.status, 200u) << other.raw;
  EXPECT_EQ(other.body["store"], false);
  auto refused = respond(c, greedy({{"input", "And then?"}, {"previous_response_id", id2}, {"instructions", "Be brief."},
                                    {"store", true}}));
  EXPECT_EQ(refused.status, 400u);
  EXPECT_EQ(refused.body["error"]["param"], "instructions");
  // Unknown ids.
  for (const std::string& bad : std::vector<std::string>{"resp_nope", "resp_000000000000000000000000_2", id1.substr(0, id1.rfind('_')) + "_1"}) {
    auto r = respond(c, greedy({{"input", "Hi"}, {"previous_response_id", bad}}));
    EXPECT_EQ(r.status, 404u) << bad << " " << r.raw;
    EXPECT_EQ(r.body["error"]["param"], "previous_response_id");
  }

  // Another uid neither reads nor continues it: it does not exist for them.
  const std::string sock = d.socket();
  const int other_uid = wait_child(spawn_as(65534, 65534, [&] {
    client::HttpClient oc(sock);
    auto gr = oc.request("GET", "/v1/responses/" + id2);
    if (!gr || gr->status != 404) return 1;
    auto pr = oc.request("POST", "/v1/responses",
                         nlohmann::json{{"input", "Hi"}, {"previous_response_id", id2}, {"max_output_tokens", 2}}.dump());
    if (!pr || pr->status != 404) return 2;
    return 0;
  }));
  EXPECT_EQ(other_uid, 0);
}

TEST(Responses, JsonSchemaAnswerParsesWithItsKeys) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const nlohmann::json schema = {
      {"type", "object"},
      {"properties", {{"name", {{"type", "string"}, {"maxLength", 8}}}, {"age", {{"type", "integer"}, {"minimum", 0}, {"maximum", 99}}}}},
      {"required", {"name", "age"}},
      {"additionalProperties", false}};
  auto r = respond(d.client(),
                   greedy({{"input", "A person:"},
                           {"text", {{"format", {{"type", "json_schema"}, {"name", "person"}, {"schema", schema}, {"strict", true}}}}}},
                          200));
  ASSERT_EQ(r.status, 200u) << r.raw;
  expect_response_shape(r.body);
  ASSERT_EQ(r.body["status"], "completed") << r.raw;
  EXPECT_EQ(r.body["store"], true);  // a session turn with a format
  EXPECT_EQ(r.body["text"]["format"]["type"], "json_schema");
  auto j = nlohmann::json::parse(r.body["output_text"].get<std::string>(), nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.body["output_text"];
  EXPECT_TRUE(j["name"].is_string());
  EXPECT_TRUE(j["age"].is_number_integer());
}

TEST(Responses, ToolChoiceRequiredGivesAFunctionCall) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const nlohmann::json tools = nlohmann::json::array(
      {{{"type", "function"},
        {"name", "get_weather"},
        {"description", "The weather in a city."},
        {"parameters",
         {{"type", "object"},
          {"properties", {{"city", {{"type", "string"}, {"maxLength", 12}}}}},
          {"required", {"city"}},
          {"additionalProperties", false}}},
        {"strict", true}}});
  const nlohmann::json body = greedy({{"input", "What is the weather in Paris?"}, {"tools", tools}, {"tool_choice", "required"}}, 300);
  auto r = respond(d.client(), body);
  ASSERT_EQ(r.status, 200u) << r.raw;
  expect_response_shape(r.body);
  nlohmann::json call_item;
  for (const auto& item : r.body["output"]) {
    if (item["type"] == "function_call") call_item = item;
  }
  ASSERT_TRUE(call_item.is_object()) << r.raw;
  EXPECT_EQ(call_item["name"], "get_weather");
  auto args = nlohmann::json::parse(call_item["arguments"].get<std::string>(), nullptr, false);
  ASSERT_TRUE(args.is_object()) << call_item;
  EXPECT_TRUE(args["city"].is_string());
  // Streamed: the call as an output item with its arguments' deltas.
  unsigned status = 0;
  auto events = stream_events(d.socket(), body, &status);
  ASSERT_EQ(status, 200u);
  std::string streamed_args;
  std::set<std::string> names;
  for (const auto& e : events) {
    names.insert(e.name);
    if (e.name == "response.function_call_arguments.delta") streamed_args += e.data["delta"].get<std::string>();
  }
  EXPECT_TRUE(names.count("response.function_call_arguments.done")) << events.size();
  EXPECT_EQ(streamed_args, call_item["arguments"]);
  // The call's result fed back as a conversation given whole: a stateless turn.
  nlohmann::json input = nlohmann::json::array({{{"role", "user"}, {"content", "What is the weather in Paris?"}}});
  input.push_back(call_item);
  input.push_back({{"type", "function_call_output"}, {"call_id", call_item["call_id"]}, {"output", "{\"sky\":\"blue\"}"}});
  auto next = respond(d.client(), greedy({{"input", input}, {"tools", tools}, {"tool_choice", "none"}}));
  ASSERT_EQ(next.status, 200u) << next.raw;
  expect_response_shape(next.body);
  EXPECT_EQ(next.body["store"], false);
  // The same through previous_response_id (the Agents SDK's loop): the result alone, a turn of the
  // stored conversation (its tools the session's), with the KV of the call's turn reused.
  EXPECT_EQ(r.body["store"], true);
  const nlohmann::json output = nlohmann::json::array(
      {{{"type", "function_call_output"}, {"call_id", call_item["call_id"]}, {"output", "{\"sky\":\"blue\"}"}}});
  auto cont = respond(d.client(), greedy({{"input", output}, {"tools", tools}, {"previous_response_id", r.body["id"]}}, 24));
  ASSERT_EQ(cont.status, 200u) << cont.raw;
  expect_response_shape(cont.body);
  EXPECT_EQ(cont.body["store"], true);
  EXPECT_EQ(cont.body["previous_response_id"], r.body["id"]);
  EXPECT_GE(cont.body["usage"]["input_tokens_details"]["cached_tokens"].get<int>(),
            r.body["usage"]["input_tokens"].get<int>())
      << cont.raw;
  // Read back: its previous response is the call's.
  auto got = call(d.client(), "GET", "/v1/responses/" + cont.body["id"].get<std::string>());
  ASSERT_EQ(got.status, 200u) << got.raw;
  EXPECT_EQ(got.body["previous_response_id"], r.body["id"]) << got.raw;
}

TEST(Responses, UnknownAndBadFieldsAre400sNamingThem) {
  DaemonProcess d(scratch_dir());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::vector<std::pair<nlohmann::json, std::string>> cases = {
      {{{"input", "Hi"}, {"reasoning", {{"effort", "low"}}}}, "reasoning"},
      {{{"input", "Hi"}, {"include", nlohmann::json::array()}}, "include"},
      {{{"input", "Hi"}, {"truncation", "auto"}}, "truncation"},
      {{{"input", "Hi"}, {"max_tokens", 4}}, "max_tokens"},
      {{{"instructions", "x"}}, "input"},
      {{{"input", nlohmann::json::array({{{"type", "input_image"}}})}}, "input"},
      {{{"input", "Hi"}, {"tools", nlohmann::json::array({{{"type", "web_search"}}})}}, "tools"},
      {{{"input", "Hi"}, {"text", {{"format", {{"type", "yaml"}}}}}}, "text"},
      {{{"input", "Hi"}, {"max_output_tokens", -1}}, "max_output_tokens"},
      {{{"input", "Hi"}, {"temperature", "hot"}}, "temperature"},
      {{{"input", "Hi"}, {"tool_choice", {{"type", "function"}}}}, "tool_choice"},
  };
  for (const auto& [body, param] : cases) {
    auto r = respond(c, body);
    EXPECT_EQ(r.status, 400u) << body << " " << r.raw;
    EXPECT_EQ(r.body["error"]["param"], param) << body << " " << r.raw;
  }
  // Advisory fields are taken.
  auto ok = respond(c, greedy({{"input", "Hi"}, {"model", "x"}, {"user", "u"}, {"metadata", {{"k", "v"}}}}, 2));
  EXPECT_EQ(ok.status, 200u) << ok.raw;
  EXPECT_EQ(ok.body["metadata"]["k"], "v");
}

}  // namespace
}  // namespace llmd::test
