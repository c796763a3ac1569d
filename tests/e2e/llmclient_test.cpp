// libllmclient's blocking calls and its C++ wrapper against the real llmd: answers, streaming,
// sessions, interrupts, and the errors an app meets (llmd not running or restarted, a quota).
#include <signal.h>

#include <atomic>
#include <thread>

#include "llmclient/llmclient.hpp"
#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

class LlmClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    ASSERT_EQ(llmc_connect(daemon_.socket().c_str(), &c_), LLMC_OK) << llmc_last_error(nullptr);
  }
  void TearDown() override { llmc_close(c_); }

  // llmd's count of requests in flight, once it has settled to 0 (or what it still is after ~10 s).
  int in_flight_settled() {
    int n = -1;
    for (int i = 0; i < 500; ++i) {
      llmc_daemon_status* st = nullptr;
      EXPECT_EQ(llmc_status_get(c_, &st), LLMC_OK) << llmc_last_error(c_);
      if (st == nullptr) return -1;
      n = st->in_flight + st->running + st->queued;
      llmc_free(st);
      if (n == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return n;
  }

  DaemonProcess daemon_{scratch_dir()};
  llmc_client* c_ = nullptr;
};

void append(void* user, llmc_req_id, const char* text, size_t len) { static_cast<std::string*>(user)->append(text, len); }

TEST_F(LlmClientTest, BlockingGenerateAnswers) {
  llmc_gen_params p;
  llmc_gen_params_init(&p);
  p.max_tokens = 16;
  llmc_result* r = nullptr;
  ASSERT_EQ(llmc_generate(c_, "Tell me a story.", &p, nullptr, nullptr, &r), LLMC_OK) << llmc_last_error(c_);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->code, LLMC_OK);
  EXPECT_EQ(r->http_status, 200);
  EXPECT_STRNE(r->text, "");
  EXPECT_GT(r->completion_tokens, 0);
  EXPECT_LE(r->completion_tokens, 16);
  EXPECT_GT(r->prompt_tokens, 0);
  EXPECT_TRUE(std::string(r->finish_reason) == "stop" || std::string(r->finish_reason) == "length") << r->finish_reason;
  EXPECT_STREQ(r->message, "");
  EXPECT_NE(std::string(r->json).find("usage"), std::string::npos) << r->json;
  llmc_free(r);

  // Whole (not streamed): the same kind of result, the token callback once.
  p.stream = 0;
  std::string seen;
  ASSERT_EQ(llmc_generate(c_, "Tell me a story.", &p, append, &seen, &r), LLMC_OK) << llmc_last_error(c_);
  EXPECT_EQ(seen, r->text);
  EXPECT_NE(std::string(r->json).find("\"chat.completion\""), std::string::npos) << r->json;
  llmc_free(r);
}

TEST_F(LlmClientTest, StreamedTokensAreTheAnswerTheHttpApiGives) {
  llmc_gen_params p;
  llmc_gen_params_init(&p);
  p.mode = LLMC_MODE_COMPLETION;
  p.max_tokens = 24;
  p.temperature = 0.8;
  p.seed = 4242;
  std::string streamed;
  llmc_result* r = nullptr;
  ASSERT_EQ(llmc_generate(c_, "Once upon a time", &p, append, &streamed, &r), LLMC_OK) << llmc_last_error(c_);
  EXPECT_EQ(streamed, r->text);
  EXPECT_STREQ(r->finish_reason, "length");
  EXPECT_EQ(r->completion_tokens, 24);

  const auto http = call(daemon_.client(), "POST", "/v1/completions",
                         nlohmann::json{{"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 0.8}, {"seed", 4242}});
  ASSERT_EQ(http.status, 200u) << http.raw;
  EXPECT_EQ(streamed, http.body["choices"][0]["text"].get<std::string>());
  llmc_free(r);
}

TEST_F(LlmClientTest, SessionsCreateListGetDelete) {
  char* id = nullptr;
  ASSERT_EQ(llmc_session_create(c_, "Be brief.", "e2e", &id), LLMC_OK) << llmc_last_error(c_);
  const std::string sid = id;
  llmc_free(id);
  EXPECT_EQ(sid.rfind("ses_", 0), 0u) << sid;

  llmc_gen_params p;
  llmc_gen_params_init(&p);
  p.session_id = sid.c_str();
  p.max_tokens = 8;
  llmc_result* r = nullptr;
  ASSERT_EQ(llmc_generate(c_, "Hello", &p, nullptr, nullptr, &r), LLMC_OK) << llmc_last_error(c_);
  EXPECT_EQ(r->session_id, sid);
  const std::string answer = r->text;
  llmc_free(r);

  llmc_sessions* list = nullptr;
  ASSERT_EQ(llmc_session_list(c_, &list), LLMC_OK) << llmc_last_error(c_);
  ASSERT_EQ(list->count, 1u);
  EXPECT_EQ(list->items[0]->id, sid);
  EXPECT_STREQ(list->items[0]->app, "e2e");
  EXPECT_STREQ(list->items[0]->system_prompt, "Be brief.");
  EXPECT_EQ(list->items[0]->owner_uid, ::getuid());
  llmc_free(list);

  llmc_session_detail* d = nullptr;
  ASSERT_EQ(llmc_session_get(c_, sid.c_str(), &d), LLMC_OK) << llmc_last_error(c_);
  EXPECT_EQ(d->session->id, sid);
  EXPECT_GT(d->session->n_tokens, 0);
  ASSERT_EQ(d->n_messages, 3u);
  EXPECT_STREQ(d->messages[0]->role, "system");
  EXPECT_STREQ(d->messages[1]->role, "user");
  EXPECT_STREQ(d->messages[1]->content, "Hello");
  EXPECT_STREQ(d->messages[2]->role, "assistant");
  EXPECT_EQ(d->messages[2]->content, answer);
  llmc_free(d);

  ASSERT_EQ(llmc_session_delete(c_, sid.c_str()), LLMC_OK) << llmc_last_error(c_);
  EXPECT_EQ(llmc_session_get(c_, sid.c_str(), &d), LLMC_ERR_NOT_FOUND);
  EXPECT_EQ(d, nullptr);
  EXPECT_NE(std::string(llmc_last_error(c_)).find(sid), std::string::npos) << llmc_last_error(c_);
  EXPECT_EQ(llmc_session_delete(c_, sid.c_str()), LLMC_ERR_NOT_FOUND);
  EXPECT_EQ(llmc_generate(c_, "Hello", &p, nullptr, nullptr, nullptr), LLMC_ERR_NOT_FOUND);
}

// Fork and rewind through the C API and the C++ wrapper: a rewind then the same message gives the
// first answer again (greedy); errors carry llmd's param.
TEST_F(LlmClientTest, SessionsForkAndRewind) {
  char* id = nullptr;
  ASSERT_EQ(llmc_session_create(c_, "Be brief.", "e2e", &id), LLMC_OK) << llmc_last_error(c_);
  const std::string sid = id;
  llmc_free(id);
  llmc_gen_params p;
  llmc_gen_params_init(&p);
  p.session_id = sid.c_str();
  p.max_tokens = 8;
  p.temperature = 0;
  std::vector<std::string> answers;
  for (const char* turn : {"Hello", "Tell me more"}) {
    llmc_result* r = nullptr;
    ASSERT_EQ(llmc_generate(c_, turn, &p, nullptr, nullptr, &r), LLMC_OK) << llmc_last_error(c_);
    answers.emplace_back(r->text);
    llmc_free(r);
  }

  char* fork = nullptr;
  ASSERT_EQ(llmc_session_fork(c_, sid.c_str(), &fork), LLMC_OK) << llmc_last_error(c_);
  const std::string fid = fork;
  llmc_free(fork);
  EXPECT_NE(fid, sid);
  llmc_session_detail* d = nullptr;
  ASSERT_EQ(llmc_session_get(c_, fid.c_str(), &d), LLMC_OK) << llmc_last_error(c_);
  EXPECT_EQ(d->n_messages, 5u);
  EXPECT_STREQ(d->session->app, "e2e");
  llmc_free(d);

  ASSERT_EQ(llmc_session_rewind(c_, fid.c_str(), LLMC_REWIND_DROP_LAST, 2, &d), LLMC_OK) << llmc_last_error(c_);
  ASSERT_EQ(d->n_messages, 3u);
  EXPECT_EQ(d->session->n_messages, 3);
  EXPECT_EQ(d->messages[2]->content, answers[0]);
  llmc_free(d);
  p.session_id = fid.c_str();
  llmc_result* again = nullptr;
  ASSERT_EQ(llmc_generate(c_, "Tell me more", &p, nullptr, nullptr, &again), LLMC_OK) << llmc_last_error(c_);
  EXPECT_EQ(again->text, answers[1]);
  llmc_free(again);
  EXPECT_EQ(llmc_session_rewind(c_, fid.c_str(), LLMC_REWIND_KEEP, 1, nullptr), LLMC_OK) << llmc_last_error(c_);

  // Errors: half a turn names the field; an unknown `how`; no such session.
  EXPECT_EQ(llmc_session_rewind(c_, sid.c_str(), LLMC_REWIND_DROP_LAST, 1, &d), LLMC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(d, nullptr);
  llmc_error_info info;
  llmc_last_error_info(c_, &info);
  EXPECT_EQ(info.http_status, 400);
  EXPECT_STREQ(info.param, "drop_last");
  EXPECT_EQ(llmc_session_rewind(c_, sid.c_str(), 7, 1, nullptr), LLMC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(llmc_session_fork(c_, "ses_000000000000000000000000", &fork), LLMC_ERR_NOT_FOUND);
  EXPECT_EQ(fork, nullptr);
  EXPECT_EQ(llmc_session_fork(c_, sid.c_str(), nullptr), LLMC_ERR_INVALID_ARGUMENT);

  // The C++ wrapper.
  llmc::Client llmd(daemon_.socket());
  const std::string second = llmd.fork_session(sid);
  const llmc::SessionDetail cut = llmd.rewind_session(second, 3, llmc::Client::Rewind::keep);
  EXPECT_EQ(cut.messages.size(), 3u);
  EXPECT_EQ(cut.session.id, second);
  try {
    llmd.rewind_session(second, 9);
    FAIL() << "dropped more messages than there are";
  } catch (const llmc::Error& e) {
    EXPECT_EQ(e.code(), LLMC_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(e.param(), "drop_last");
  }
}

llmc_client* g_signal_client = nullptr;
void interrupt_on_signal(int) { llmc_interrupt(g_signal_client); }

TEST_F(LlmClientTest, InterruptFromASignalHandlerEndsABlockingCall) {
  struct sigaction sa {}, old {};
  sa.sa_handler = interrupt_on_signal;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  g_signal_client = c_;
  llmc_gen_params p;
  llmc_gen_params_init(&p);
  p.mode = LLMC_MODE_COMPLETION;
  p.max_tokens = 1900;
  p.ignore_eos = 1;
  int tokens = 0;
  auto on_token = [](void* user, llmc_req_id, const char*, size_t) {
    if ((*static_cast<int*>(user))++ == 0) ::raise(SIGUSR1);  // Ctrl-C, as llmctl sees it
  };
  llmc_result* r = nullptr;
  EXPECT_EQ(llmc_generate(c_, "Once upon a time", &p, on_token, &tokens, &r), LLMC_ERR_CANCELLED);
  ::sigaction(SIGUSR1, &old, nullptr);
  g_signal_client = nullptr;
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->code, LLMC_ERR_CANCELLED);
  EXPECT_LT(r->completion_tokens, 1900);
  llmc_free(r);
  EXPECT_GE(tokens, 1);
  EXPECT_EQ(in_flight_settled(), 0) << "llmd stopped the generation";
  // The interrupt was consumed: the next call runs.
  llmc_gen_params_init(&p);
  p.max_tokens = 4;
  EXPECT_EQ(llmc_generate(c_, "Hi", &p, nullptr, nullptr, nullptr), LLMC_OK) << llmc_last_error(c_);
}

TEST(LlmClientDaemon, NotRunningIsUnavailableAndARestartIsReachedAgain) {
  DaemonProcess d(scratch_dir());
  llmc_client* c = nullptr;
  ASSERT_EQ(llmc_connect(d.socket().c_str(), &c), LLMC_ERR_UNAVAILABLE);
  const std::string msg = llmc_last_error(nullptr);
  EXPECT_NE(msg.find(d.socket()), std::string::npos) << msg;
  EXPECT_NE(msg.find("systemctl start llmd"), std::string::npos) << msg;

  ASSERT_TRUE(d.start()) << d.log();
  ASSERT_EQ(llmc_connect(d.socket().c_str(), &c), LLMC_OK) << llmc_last_error(nullptr);
  llmc_gen_params p;
  llmc_gen_params_init(&p);
  p.max_tokens = 4;
  char* id = nullptr;
  ASSERT_EQ(llmc_session_create(c, nullptr, nullptr, &id), LLMC_OK) << llmc_last_error(c);
  const std::string sid = id;
  llmc_free(id);
  EXPECT_EQ(llmc_generate(c, "Hi", &p, nullptr, nullptr, nullptr), LLMC_OK) << llmc_last_error(c);

  d.stop();
  EXPECT_EQ(llmc_generate(c, "Hi", &p, nullptr, nullptr, nullptr), LLMC_ERR_UNAVAILABLE);
  EXPECT_NE(std::string(llmc_last_error(c)).find("not running"), std::string::npos) << llmc_last_error(c);

  ASSERT_TRUE(d.start()) << d.log();
  EXPECT_EQ(llmc_generate(c, "Hi", &p, nullptr, nullptr, nullptr), LLMC_OK) << llmc_last_error(c);
  llmc_session_detail* detail = nullptr;
  EXPECT_EQ(llmc_session_get(c, sid.c_str(), &detail), LLMC_OK) << "sessions outlive the daemon: " << llmc_last_error(c);
  llmc_free(detail);
  llmc_close(c);
}

TEST(LlmClientDaemon, OverAQuotaIsQuotaNamingTheLimit) {
  DaemonOptions o;
  o.args = {"--max-sessions-per-user", "1", "--max-prompt-tokens", "40"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  llmc_client* c = nullptr;
  ASSERT_EQ(llmc_connect(d.socket().c_str(), &c), LLMC_OK) << llmc_last_error(nullptr);
  char* id = nullptr;
  ASSERT_EQ(llmc_session_create(c, nullptr, nullptr, &id), LLMC_OK) << llmc_last_error(c);
  llmc_free(id);
  EXPECT_EQ(llmc_session_create(c, nullptr, nullptr, &id), LLMC_ERR_QUOTA);
  EXPECT_EQ(id, nullptr);
  llmc_error_info e{};
  llmc_last_error_info(c, &e);
  EXPECT_EQ(e.code, LLMC_ERR_QUOTA);
  EXPECT_EQ(e.http_status, 429);
  EXPECT_STREQ(e.param, "max-sessions-per-user");
  EXPECT_NE(std::string(e.message).find("max-sessions-per-user"), std::string::npos) << e.message;
  EXPECT_GE(e.retry_after_s, 1);

  std::string long_prompt;
  for (int i = 0; i < 30; ++i) long_prompt += "Once upon a time ";
  llmc_result* r = nullptr;
  EXPECT_EQ(llmc_generate(c, long_prompt.c_str(), nullptr, nullptr, nullptr, &r), LLMC_ERR_QUOTA);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->http_status, 429);
  EXPECT_STREQ(r->error_param, "max-prompt-tokens");
  EXPECT_NE(std::string(r->message).find("max-prompt-tokens"), std::string::npos) << r->message;
  EXPECT_GE(r->retry_after_s, 1);
  llmc_free(r);
  llmc_close(c);
}

TEST_F(LlmClientTest, CppWrapperStreamsARangeAndThrowsErrors) {
  llmc::Client llmd(daemon_.socket());
  llmc::GenParams params;
  params.completion = true;
  params.max_tokens = 16;
  params.temperature = 0.8;
  params.seed = 99;
  std::string ranged;
  auto tokens = llmd.stream("Once upon a time", params);
  for (const std::string& t : tokens) ranged += t;
  EXPECT_EQ(ranged, tokens.result().text);
  EXPECT_EQ(tokens.result().completion_tokens, 16);
  EXPECT_EQ(llmd.generate("Once upon a time", params).text, ranged) << "same seed, same answer";

  const std::string id = llmd.create_session({}, "cpp");
  EXPECT_EQ(llmd.sessions().size(), 1u);
  params = {};
  params.session = id;
  params.max_tokens = 4;
  EXPECT_EQ(llmd.generate("Hi", params).session_id, id);
  EXPECT_EQ(llmd.session(id).messages.size(), 2u);
  llmd.delete_session(id);
  try {
    llmd.session(id);
    FAIL() << "a deleted session was found";
  } catch (const llmc::Error& e) {
    EXPECT_EQ(e.code(), LLMC_ERR_NOT_FOUND);
    EXPECT_EQ(e.http_status(), 404);
  }
  EXPECT_FALSE(llmd.status().model.empty());
  EXPECT_EQ(llmd.call("GET", "/v1/health").status, 200);
}

// Structured output (llmc_gen_params.json_schema, .grammar): the answer parses as JSON with the
// schema's keys, streamed or whole, from C and C++; llmd's refusals come back with their param.
TEST_F(LlmClientTest, JsonSchemaAnswersParse) {
  const char* schema =
      R"({"type": "object", "properties": {"mood": {"type": "string", "enum": ["happy", "sad"]},)"
      R"( "count": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["mood", "count"],)"
      R"( "additionalProperties": false})";
  auto check = [](const std::string& text, const std::string& finish) {
    EXPECT_EQ(finish, "stop") << text;
    const auto j = nlohmann::json::parse(text, nullptr, false);
    ASSERT_TRUE(j.is_object()) << text;
    EXPECT_TRUE(j.contains("mood") && (j["mood"] == "happy" || j["mood"] == "sad")) << text;
    EXPECT_TRUE(j.contains("count") && j["count"].is_number_integer()) << text;
  };
  llmc_gen_params p;
  llmc_gen_params_init(&p);
  p.max_tokens = 200;
  p.temperature = 0;
  p.json_schema = schema;
  for (const int stream : {1, 0}) {
    p.stream = stream;
    std::string seen;
    llmc_result* r = nullptr;
    ASSERT_EQ(llmc_generate(c_, "How do you feel?", &p, append, &seen, &r), LLMC_OK) << llmc_last_error(c_);
    EXPECT_EQ(seen, r->text);
    check(r->text, r->finish_reason);
    llmc_free(r);
  }
  // A grammar llmd cannot parse: its 400, with the param.
  llmc_gen_params_init(&p);
  p.grammar = "root ::= ((";
  llmc_result* r = nullptr;
  EXPECT_EQ(llmc_generate(c_, "Hi", &p, nullptr, nullptr, &r), LLMC_ERR_INVALID_ARGUMENT);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->http_status, 400);
  EXPECT_STREQ(r->error_param, "grammar") << r->message;
  llmc_free(r);

  llmc::Client llmd(daemon_.socket());
  llmc::GenParams params;
  params.max_tokens = 200;
  params.temperature = 1.0;
  params.seed = 5;
  params.json_schema = schema;
  const llmc::Result sampled = llmd.generate("Tell me how you feel.", params);
  check(sampled.text, sampled.finish_reason);
  params.json_schema.reset();
  params.grammar = R"(root ::= ("yes" | "no") ".")";
  const std::string said = llmd.generate("Is it day?", params).text;
  EXPECT_TRUE(said == "yes." || said == "no.") << said;
}

}  // namespace
}  // namespace llmd::test
