// The Responses API's request side (ipc/responses_request.h): input items as chat messages, the
// translation of tools, tool_choice and text.format, strict fields, and stored response ids.
#include <gtest/gtest.h>

#include "ipc/responses_request.h"

namespace llmd::ipc {
namespace {

using nlohmann::json;

Result<ResponsesRequest> read(const json& body) { return read_responses_request(body, core::ServiceLimits{}, 2048); }

TEST(ResponsesRequest, InputItemsBecomeChatMessages) {
  const json input = json::array(
      {{{"role", "developer"}, {"content", "Be brief."}},
       {{"type", "message"}, {"role", "user"}, {"content", json::array({{{"type", "input_text"}, {"text", "a"}}, {{"type", "input_text"}, {"text", "b"}}})}},
       {{"type", "message"}, {"role", "assistant"}, {"id", "msg_1"}, {"status", "completed"},
        {"content", json::array({{{"type", "output_text"}, {"text", "c"}, {"annotations", json::array()}}})}},
       {{"type", "function_call"}, {"id", "fc_1"}, {"call_id", "call_1"}, {"name", "f"}, {"arguments", "{}"}},
       {{"type", "function_call"}, {"call_id", "call_2"}, {"name", "g"}, {"arguments", "{\"x\":1}"}},
       {{"type", "function_call_output"}, {"call_id", "call_2"}, {"output", "42"}}});
  auto r = read({{"input", input}});
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->input.size(), 4u);
  EXPECT_EQ(r->input[0].role, "system");
  EXPECT_EQ(r->input[1].content, "ab");
  EXPECT_EQ(r->input[2].role, "assistant");
  EXPECT_EQ(r->input[2].content, "c");
  ASSERT_EQ(r->input[2].tool_calls.size(), 2u);  // both calls join the answer before them
  EXPECT_EQ(r->input[2].tool_calls[1].arguments, "{\"x\":1}");
  EXPECT_EQ(r->input[3].role, "tool");
  EXPECT_EQ(r->input[3].tool_call_id, "call_2");
  EXPECT_EQ(r->input[3].name, "g");
  EXPECT_EQ(unstorable_param(*r), "input");
}

TEST(ResponsesRequest, ToolsToolChoiceAndTextFormat) {
  auto r = read({{"input", "Hi"},
                 {"tools", json::array({{{"type", "function"}, {"name", "f"}, {"parameters", {{"type", "object"}}}, {"strict", true}}})},
                 {"tool_choice", {{"type", "function"}, {"name", "f"}}},
                 {"max_output_tokens", 7},
                 {"text", {{"format", {{"type", "json_schema"}, {"name", "x"}, {"schema", {{"type", "object"}}}}}}}});
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->turn.chat.tools.size(), 1u);
  EXPECT_EQ(r->turn.chat.tools[0].name, "f");
  EXPECT_EQ(r->turn.chat.tool_choice, engine::ToolChoice::function);
  EXPECT_EQ(r->turn.chat.tool_name, "f");
  EXPECT_FALSE(r->turn.chat.json_schema.empty());
  EXPECT_EQ(r->turn.params.max_tokens, 7);
  EXPECT_EQ(unstorable_param(*r), "");  // tools and a format go with a session turn
  auto plain = read({{"input", "Hi"}});
  ASSERT_TRUE(plain);
  EXPECT_EQ(unstorable_param(*plain), "");
  EXPECT_EQ(plain->turn.chat.tool_choice, engine::ToolChoice::none);
  // Outputs of calls alone: the next turn of the previous response's session; not without one.
  const json output = json::array({{{"type", "function_call_output"}, {"call_id", "c"}, {"output", "42"}}});
  auto results = read({{"input", output}, {"previous_response_id", "resp_00_2"}});
  ASSERT_TRUE(results) << results.error().to_string();
  EXPECT_EQ(unstorable_param(*results), "");
  auto orphan = read({{"input", output}});
  ASSERT_TRUE(orphan);
  EXPECT_EQ(unstorable_param(*orphan), "input");
}

TEST(ResponsesRequest, EveryFieldItDoesNotTakeIsNamed) {
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"input", "Hi"}, {"reasoning", json::object()}}, "reasoning"},
      {{{"input", "Hi"}, {"background", true}}, "background"},
      {{{"input", "Hi"}, {"max_output_tokens", 0}}, "max_output_tokens"},
      {{{"input", json::array()}}, "input"},
      {{{"input", json::array({{{"role", "tool"}, {"content", "x"}}})}}, "input"},
      {{{"input", json::array({{{"role", "user"}, {"content", "x"}, {"name", "n"}}})}}, "input"},
      {{{"input", "Hi"}, {"tools", json::array({{{"type", "function"}, {"function", json::object()}}})}}, "tools"},
      {{{"input", "Hi"}, {"tool_choice", {{"type", "allowed_tools"}}}}, "tool_choice"},
      {{{"input", "Hi"}, {"text", {{"verbosity", "low"}}}}, "text"},
      {{{"input", "Hi"}, {"text", {{"format", {{"type", "json_schema"}}}}}}, "text"},
      {{{"input", "Hi"}, {"store", "yes"}}, "store"},
      {{{"input", "Hi"}, {"previous_response_id", 3}}, "previous_response_id"},
  };
  for (const auto& [body, param] : cases) {
    auto r = read(body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().param(), param) << body << ": " << r.error().to_string();
  }
}

TEST(ResponsesRequest, StoredResponseIdsRoundTrip) {
  const StoredResponseRef ref{"ses_0123456789abcdef01234567", 5};
  const std::string id = stored_response_id(ref);
  EXPECT_EQ(id, "resp_0123456789abcdef01234567_5");
  auto back = parse_response_id(id);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->session_id, ref.session_id);
  EXPECT_EQ(back->n_messages, 5u);
  for (const char* bad : {"resp_0123456789abcdef01234567", "resp_0123456789ABCDEF01234567_5", "resp_0123_5",
                          "ses_0123456789abcdef01234567_5", "resp_0123456789abcdef01234567_", "resp_0123456789abcdef01234567_x",
                          "resp_0123456789abcdef01234567_1234567890"}) {
    EXPECT_FALSE(parse_response_id(bad)) << bad;
  }
}

}  // namespace
}  // namespace llmd::ipc
