// libllmclient without a daemon: argument checks, error codes and messages, and the core's
// behaviour against a socket that misbehaves (silent, garbage, hang-up mid-answer, an answer in
// one-byte pieces), event-loop hooks, cancellation and closing. What the library does with the
// real llmd is in tests/e2e/llmclient_*_test.cpp.
#include <poll.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "llmclient/llmclient.hpp"  // also checks that the C++ wrapper compiles with the project's warnings
#include "tests/client/fake_llmd.h"
#include "tests/support/test_env.h"

namespace llmd::test {
namespace {

const std::string kCompletionEvent = R"({"object":"text_completion","choices":[{"index":0,"text":"%s","finish_reason":null}]})";

std::string piece(const std::string& text) {
  std::string e = kCompletionEvent;
  e.replace(e.find("%s"), 2, text);
  return e;
}

// A whole streamed answer: "Hello", " world", then the end with usage.
std::string streamed_answer() {
  return FakeLlmd::event_stream_head() + FakeLlmd::event(piece("")) + FakeLlmd::event(piece("Hello")) +
         FakeLlmd::event(piece(" world")) +
         FakeLlmd::event(R"({"object":"text_completion","choices":[{"index":0,"text":"","finish_reason":"length"}],)"
                         R"("usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}})") +
         FakeLlmd::event("[DONE]");
}

void answer_streamed(int fd) {
  FakeLlmd::read_request(fd);
  FakeLlmd::send_all(fd, streamed_answer());
}

void stay_silent(int fd) {
  FakeLlmd::read_request(fd);
  FakeLlmd::wait_for_close(fd, 20000);
}

llmc_client* connect_to(const std::string& path) {
  llmc_client* c = nullptr;
  EXPECT_EQ(llmc_connect(path.c_str(), &c), LLMC_OK) << llmc_last_error(nullptr);
  return c;
}

struct Collected {
  std::string text;
  std::vector<llmc_code> done;
  std::string message;
};

void collect_token(void* user, llmc_req_id, const char* text, size_t len) {
  static_cast<Collected*>(user)->text.append(text, len);
}
void collect_done(void* user, const llmc_result* r) {
  static_cast<Collected*>(user)->done.push_back(r->code);
  static_cast<Collected*>(user)->message = r->message;
}

// Runs the client's loop with poll() until nothing is pending (or 20 s pass: a test failure).
void run_until_idle(llmc_client* c) {
  for (int i = 0; i < 20000 && llmc_pending(c) > 0; ++i) {
    pollfd p{llmc_fd(c), POLLIN, 0};
    const long t = llmc_timeout_ms(c);
    ::poll(&p, 1, t < 0 || t > 1 ? 1 : static_cast<int>(t));
    ASSERT_EQ(llmc_process(c), LLMC_OK) << llmc_last_error(c);
  }
  ASSERT_EQ(llmc_pending(c), 0u);
}

TEST(LlmClient, StrerrorNamesEveryCode) {
  std::set<std::string> names;
  for (int code = LLMC_OK; code <= LLMC_ERR_NO_SPACE; ++code) {
    const std::string name = llmc_strerror(static_cast<llmc_code>(code));
    EXPECT_FALSE(name.empty());
    names.insert(name);
  }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(LLMC_ERR_NO_SPACE) + 1) << "every code has its own name";
  EXPECT_STREQ(llmc_strerror(static_cast<llmc_code>(999)), "unknown error");
  EXPECT_STRNE(llmc_version(), "");
}

TEST(LlmClient, NoDaemonIsUnavailableAndSaysHowToStartIt) {
  const std::string sock = scratch_dir() + "/none.sock";
  llmc_client* c = reinterpret_cast<llmc_client*>(1);
  EXPECT_EQ(llmc_connect(sock.c_str(), &c), LLMC_ERR_UNAVAILABLE);
  EXPECT_EQ(c, nullptr);
  const std::string msg = llmc_last_error(nullptr);
  EXPECT_NE(msg.find(sock), std::string::npos) << msg;
  EXPECT_NE(msg.find("not running"), std::string::npos) << msg;
  EXPECT_NE(msg.find("systemctl start llmd"), std::string::npos) << msg;
  llmc_error_info info{};
  llmc_last_error_info(nullptr, &info);
  EXPECT_EQ(info.code, LLMC_ERR_UNAVAILABLE);
  EXPECT_EQ(info.http_status, 0);

  // The environment names the socket when the program does not.
  ::setenv("LLMD_SOCKET", sock.c_str(), 1);
  EXPECT_EQ(llmc_connect(nullptr, &c), LLMC_ERR_UNAVAILABLE);
  ::unsetenv("LLMD_SOCKET");
  EXPECT_NE(std::string(llmc_last_error(nullptr)).find(sock), std::string::npos);

  // A socket file nobody listens on any more (a crashed daemon): refused, also unavailable.
  {
    FakeLlmd gone(scratch_dir() + "/gone.sock", {});
    ASSERT_TRUE(::link(gone.path().c_str(), (gone.path() + ".kept").c_str()) == 0);
  }
  const std::string kept = scratch_dir() + "/gone.sock.kept";
  EXPECT_EQ(llmc_connect(kept.c_str(), &c), LLMC_ERR_UNAVAILABLE) << llmc_last_error(nullptr);
}

TEST(LlmClient, BadArgumentsAreRefusedNotFatal) {
  FakeLlmd fake(scratch_dir() + "/s.sock", {answer_streamed});
  llmc_client* c = connect_to(fake.path());
  ASSERT_NE(c, nullptr);
  auto refused = [&](llmc_code code, const char* needle) {
    EXPECT_EQ(code, LLMC_ERR_INVALID_ARGUMENT) << needle;
    EXPECT_NE(std::string(llmc_last_error(c)).find(needle), std::string::npos) << llmc_last_error(c);
  };
  EXPECT_EQ(llmc_connect(nullptr, nullptr), LLMC_ERR_INVALID_ARGUMENT);
  llmc_client* none = nullptr;
  EXPECT_EQ(llmc_connect(std::string(200, 'x').c_str(), &none), LLMC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(llmc_generate(nullptr, "x", nullptr, nullptr, nullptr, nullptr), LLMC_ERR_INVALID_ARGUMENT);
  refused(llmc_generate(c, nullptr, nullptr, nullptr, nullptr, nullptr), "prompt is NULL");
  refused(llmc_generate(c, "caf\xC3", nullptr, nullptr, nullptr, nullptr), "UTF-8");
  refused(llmc_generate(c, "\xED\xA0\x80", nullptr, nullptr, nullptr, nullptr), "UTF-8");  // a surrogate

  llmc_gen_params p;
  std::memset(&p, 0, sizeof p);  // not initialised: struct_size 0
  refused(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), "llmc_gen_params_init");
  llmc_gen_params_init(&p);
  p.n_stop = 1000;
  refused(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), "n_stop");
  llmc_gen_params_init(&p);
  p.n_stop = 1;
  refused(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), "stop is NULL");
  llmc_gen_params_init(&p);
  p.max_tokens = -5;
  refused(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), "max_tokens");
  llmc_gen_params_init(&p);
  p.temperature = INFINITY;
  refused(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), "temperature");
  llmc_gen_params_init(&p);
  p.session_id = "ses_1";
  p.mode = LLMC_MODE_COMPLETION;
  refused(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), "LLMC_MODE_CHAT");
  llmc_gen_params_init(&p);
  p.mode = 7;
  refused(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), "mode");

  // A newer header's larger struct: accepted when what this library does not know is zero.
  struct Newer {
    llmc_gen_params p;
    int future_field;
  } newer{};
  llmc_gen_params_init(&newer.p);
  newer.p.struct_size = sizeof newer;
  newer.future_field = 1;
  refused(llmc_generate(c, "x", &newer.p, nullptr, nullptr, nullptr), "newer header");

  llmc_req_id id = 99;
  refused(llmc_generate_async(c, nullptr, nullptr, nullptr, nullptr, nullptr, &id), "prompt");
  EXPECT_EQ(id, 0u) << "no request, no id";
  EXPECT_EQ(llmc_pending(c), 0u) << "a refused request runs no callback";
  refused(llmc_session_get(c, nullptr, nullptr), "NULL");
  llmc_session_detail* d = nullptr;
  refused(llmc_session_get(c, nullptr, &d), "session id is NULL");
  refused(llmc_session_delete(c, ""), "session id is empty");
  refused(llmc_session_create(c, nullptr, nullptr, nullptr), "NULL");
  char* fork_id = reinterpret_cast<char*>(1);
  refused(llmc_session_fork(c, "ses_1", nullptr), "NULL");
  refused(llmc_session_fork(c, nullptr, &fork_id), "session id is NULL");
  EXPECT_EQ(fork_id, nullptr) << "out-parameters are cleared first";
  refused(llmc_session_rewind(c, "ses_1", 7, 1, nullptr), "LLMC_REWIND_DROP_LAST");
  refused(llmc_session_rewind(c, "", LLMC_REWIND_KEEP, 1, &d), "session id is empty");
  EXPECT_EQ(d, nullptr);
  refused(llmc_call(c, "get", "/v1/status", nullptr, nullptr, nullptr), "method");
  refused(llmc_call(c, "GET", "v1/status", nullptr, nullptr, nullptr), "path");
  refused(llmc_call(c, "GET", "/v1/status HTTP/1.0\r\nX: y", nullptr, nullptr, nullptr), "path");
  refused(llmc_set_timeout(c, 0), "timeout");
  EXPECT_EQ(llmc_cancel(c, 12345), LLMC_ERR_NOT_FOUND);
  EXPECT_EQ(llmc_set_loop_hooks(nullptr, nullptr), LLMC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(llmc_fd(nullptr), -1);
  llmc_interrupt(nullptr);
  llmc_close(nullptr);
  llmc_free(nullptr);
  EXPECT_LE(fake.connections(), 1) << "only connect's probe reached the socket";
  llmc_close(c);
}

// json_schema / grammar (libllmclient.so.1.1): checked before anything is sent, then sent as llmd's
// response_format / grammar; a caller built with the 1.0 header (a smaller struct) still works.
TEST(LlmClient, StructuredOutputParamsAreCheckedAndSent) {
  std::mutex mu;
  std::vector<std::string> requests;
  FakeLlmd fake(scratch_dir() + "/s.sock", {[&](int fd) {
                  const std::string req = FakeLlmd::read_request(fd);
                  // connect()'s probe sends nothing, and its empty read may come after a
                  // request's: it is not a request (taking it for the last one broke the test).
                  if (!req.empty()) {
                    std::lock_guard<std::mutex> lock(mu);
                    requests.push_back(req);
                  }
                  FakeLlmd::send_all(fd, streamed_answer());
                }});
  llmc_client* c = connect_to(fake.path());
  ASSERT_NE(c, nullptr);
  auto refused = [&](const llmc_gen_params& p, const char* needle) {
    EXPECT_EQ(llmc_generate(c, "x", &p, nullptr, nullptr, nullptr), LLMC_ERR_INVALID_ARGUMENT) << needle;
    EXPECT_NE(std::string(llmc_last_error(c)).find(needle), std::string::npos) << llmc_last_error(c);
  };
  llmc_gen_params p;
  llmc_gen_params_init(&p);
  EXPECT_EQ(p.json_schema, nullptr);
  EXPECT_EQ(p.grammar, nullptr);
  p.json_schema = "{\"type\": \"object\"";  // cut short
  refused(p, "json_schema is not a JSON object");
  p.json_schema = "[1, 2]";
  refused(p, "json_schema is not a JSON object");
  p.json_schema = "{}";
  p.grammar = "root ::= \"a\"";
  refused(p, "do not go together");
  p.grammar = nullptr;
  p.session_id = "ses_1";
  refused(p, "one-off chats");
  p.session_id = nullptr;
  p.mode = LLMC_MODE_COMPLETION;
  refused(p, "LLMC_MODE_COMPLETION");
  llmc_gen_params_init(&p);
  p.grammar = "";
  refused(p, "grammar is empty");
  p.grammar = "root ::= \"caf\xC3\"";
  refused(p, "UTF-8");
  // Only connect's probe (counted by the fake's accept thread, perhaps later) reached the socket.
  EXPECT_LE(fake.connections(), 1) << "a refused request reaches nothing";

  auto sent_body = [&](const llmc_gen_params& params) {
    EXPECT_EQ(llmc_generate(c, "x", &params, nullptr, nullptr, nullptr), LLMC_OK) << llmc_last_error(c);
    std::lock_guard<std::mutex> lock(mu);
    if (requests.empty()) return nlohmann::json();
    const std::string& req = requests.back();
    return nlohmann::json::parse(req.substr(req.find("\r\n\r\n") + 4), nullptr, false);
  };
  llmc_gen_params_init(&p);
  p.json_schema = R"({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})";
  nlohmann::json b = sent_body(p);
  EXPECT_EQ(b["response_format"]["type"], "json_schema") << b.dump();
  EXPECT_EQ(b["response_format"]["json_schema"]["schema"]["required"][0], "ok") << b.dump();
  EXPECT_FALSE(b.contains("grammar"));
  p.json_schema = "{}";
  b = sent_body(p);
  EXPECT_EQ(b["response_format"], nlohmann::json({{"type", "json_object"}})) << b.dump();
  llmc_gen_params_init(&p);
  p.grammar = "root ::= \"yes\" | \"no\"";
  b = sent_body(p);
  EXPECT_EQ(b["grammar"], "root ::= \"yes\" | \"no\"") << b.dump();
  EXPECT_FALSE(b.contains("response_format"));

  // The 1.0 header's struct: everything before json_schema; what follows it in memory is not read.
  struct {
    llmc_gen_params p;
  } old{};
  llmc_gen_params_init(&old.p);
  old.p.struct_size = offsetof(llmc_gen_params, json_schema);
  old.p.max_tokens = 7;
  old.p.json_schema = "not JSON: past the old struct, never read";
  b = sent_body(old.p);
  EXPECT_EQ(b["max_tokens"], 7) << b.dump();
  EXPECT_FALSE(b.contains("response_format")) << b.dump();
  // A size between two headers' is garbage.
  llmc_gen_params_init(&p);
  p.struct_size = offsetof(llmc_gen_params, json_schema) + 4;
  refused(p, "llmc_gen_params_init");
  llmc_close(c);
}

TEST(LlmClient, AnAnswerInOneBytePiecesIsParsedWhole) {
  FakeLlmd fake(scratch_dir() + "/s.sock", {[](int fd) {
                  FakeLlmd::read_request(fd);
                  for (const char ch : streamed_answer()) {
                    FakeLlmd::send_all(fd, std::string(1, ch));
                    std::this_thread::sleep_for(std::chrono::microseconds(200));
                  }
                }});
  llmc_client* c = connect_to(fake.path());
  Collected got;
  llmc_result* r = nullptr;
  ASSERT_EQ(llmc_generate(c, "Hi", nullptr, collect_token, &got, &r), LLMC_OK) << llmc_last_error(c);
  EXPECT_EQ(got.text, "Hello world");
  EXPECT_STREQ(r->text, "Hello world");
  EXPECT_STREQ(r->finish_reason, "length");
  EXPECT_EQ(r->prompt_tokens, 3);
  EXPECT_EQ(r->completion_tokens, 2);
  EXPECT_EQ(r->cached_tokens, 1);
  EXPECT_EQ(r->http_status, 200);
  llmc_free(r);
  llmc_close(c);
}

TEST(LlmClient, MisbehavingDaemonGivesClearErrors) {
  FakeLlmd fake(scratch_dir() + "/s.sock",
                {[](int) {},  // connect's probe
                 [](int fd) {  // garbage
                   FakeLlmd::read_request(fd);
                   FakeLlmd::send_all(fd, "SSH-2.0-OpenSSH\r\n\r\n");
                 },
                 [](int fd) {  // hangs up mid-answer
                   FakeLlmd::read_request(fd);
                   FakeLlmd::send_all(fd, FakeLlmd::event_stream_head() + FakeLlmd::event(piece("Once")));
                 },
                 [](int fd) {  // hangs up without answering
                   FakeLlmd::read_request(fd);
                 },
                 [](int fd) {  // an error answer in llmd's shape
                   FakeLlmd::read_request(fd);
                   FakeLlmd::send_all(fd, FakeLlmd::json_answer(
                                              409, R"({"error":{"message":"session ses_1 is busy","type":"x","param":null,"code":"busy"}})"));
                 },
                 [](int fd) {  // an error inside the stream
                   FakeLlmd::read_request(fd);
                   FakeLlmd::send_all(fd, FakeLlmd::event_stream_head() + FakeLlmd::event(piece("A")) +
                                              FakeLlmd::event(R"({"error":{"message":"the engine failed","code":"internal_error"}})") +
                                              FakeLlmd::event("[DONE]"));
                 }});
  llmc_client* c = connect_to(fake.path());
  llmc_result* r = nullptr;
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, &r), LLMC_ERR_PROTOCOL) << llmc_last_error(c);
  llmc_free(r);
  Collected got;
  EXPECT_EQ(llmc_generate(c, "x", nullptr, collect_token, &got, &r), LLMC_ERR_IO);
  EXPECT_NE(std::string(llmc_last_error(c)).find("mid-answer"), std::string::npos) << llmc_last_error(c);
  EXPECT_EQ(got.text, "Once");
  ASSERT_NE(r, nullptr);
  EXPECT_STREQ(r->text, "Once") << "the partial answer is kept";
  EXPECT_EQ(r->http_status, 200);
  llmc_free(r);
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, nullptr), LLMC_ERR_IO);
  EXPECT_NE(std::string(llmc_last_error(c)).find("without answering"), std::string::npos) << llmc_last_error(c);
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, nullptr), LLMC_ERR_BUSY);
  EXPECT_STREQ(llmc_last_error(c), "session ses_1 is busy");
  llmc_error_info info{};
  llmc_last_error_info(c, &info);
  EXPECT_EQ(info.http_status, 409);
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, &r), LLMC_ERR_SERVER);
  EXPECT_STREQ(llmc_last_error(c), "the engine failed");
  EXPECT_STREQ(r->text, "A");
  llmc_free(r);
  llmc_close(c);
}

// llmd's storage is full: HTTP 507 before a turn, or an insufficient_storage event after its text.
TEST(LlmClient, StorageFullIsItsOwnCode) {
  FakeLlmd fake(scratch_dir() + "/s.sock",
                {[](int) {},  // connect's probe
                 [](int fd) {
                   FakeLlmd::read_request(fd);
                   FakeLlmd::send_all(fd, FakeLlmd::json_answer(507, R"j({"error":{"message":"llmd's storage is full )j"
                                                                     R"j((limit disk-reserve-mib = 256)","type":"server_error",)j"
                                                                     R"j("param":"disk-reserve-mib","code":"insufficient_storage"}})j"));
                 },
                 [](int fd) {
                   FakeLlmd::read_request(fd);
                   FakeLlmd::send_all(fd, FakeLlmd::event_stream_head() + FakeLlmd::event(piece("A")) +
                                              FakeLlmd::event(R"({"error":{"message":"saving the turn: disk full",)"
                                                              R"("code":"insufficient_storage"}})") +
                                              FakeLlmd::event("[DONE]"));
                 }});
  llmc_client* c = connect_to(fake.path());
  char* id = nullptr;
  EXPECT_EQ(llmc_session_create(c, nullptr, nullptr, &id), LLMC_ERR_NO_SPACE);
  llmc_error_info info{};
  llmc_last_error_info(c, &info);
  EXPECT_EQ(info.http_status, 507);
  EXPECT_STREQ(info.param, "disk-reserve-mib");
  llmc_result* r = nullptr;
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, &r), LLMC_ERR_NO_SPACE);
  EXPECT_STREQ(llmc_last_error(c), "saving the turn: disk full");
  llmc_free(r);
  llmc_close(c);
}

TEST(LlmClient, SilentDaemonTimesOut) {
  FakeLlmd fake(scratch_dir() + "/s.sock", {stay_silent});
  llmc_client* c = connect_to(fake.path());
  ASSERT_EQ(llmc_set_timeout(c, 200), LLMC_OK);
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, nullptr), LLMC_ERR_TIMEOUT);
  EXPECT_NE(std::string(llmc_last_error(c)).find("200 ms"), std::string::npos) << llmc_last_error(c);
  llmc_close(c);
}

TEST(LlmClient, InterruptCancelsTheBlockingCallAndOnlyIt) {
  FakeLlmd fake(scratch_dir() + "/s.sock", {stay_silent});
  llmc_client* c = connect_to(fake.path());
  // Pending before the call: the call returns at once, without reaching llmd.
  llmc_interrupt(c);
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, nullptr), LLMC_ERR_CANCELLED);
  EXPECT_LE(fake.connections(), 1) << "only connect's probe";
  // Forgotten when cleared.
  llmc_interrupt(c);
  llmc_interrupt_clear(c);
  ASSERT_EQ(llmc_set_timeout(c, 300), LLMC_OK);
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, nullptr), LLMC_ERR_TIMEOUT);
  // From another thread, during the call.
  ASSERT_EQ(llmc_set_timeout(c, 60000), LLMC_OK);
  std::thread t([&] {
    while (fake.connections() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    llmc_interrupt(c);
  });
  EXPECT_EQ(llmc_generate(c, "x", nullptr, nullptr, nullptr, nullptr), LLMC_ERR_CANCELLED);
  t.join();
  EXPECT_STREQ(llmc_last_error(c), "interrupted");
  llmc_close(c);
}

struct HookLog {
  std::vector<int> watch;  // events given to watch
  std::vector<long> timers;
  int cleanups = 0;
};

TEST(LlmClient, LoopHooksWatchOnlyWhileRequestsAreInFlight) {
  FakeLlmd fake(scratch_dir() + "/s.sock", {answer_streamed});
  llmc_client* c = connect_to(fake.path());
  HookLog log;
  llmc_loop_hooks hooks{};
  hooks.data = &log;
  hooks.watch = [](void* d, int, int events) { static_cast<HookLog*>(d)->watch.push_back(events); };
  hooks.set_timer = [](void* d, long ms) { static_cast<HookLog*>(d)->timers.push_back(ms); };
  hooks.cleanup = [](void* d) { ++static_cast<HookLog*>(d)->cleanups; };
  ASSERT_EQ(llmc_set_loop_hooks(c, &hooks), LLMC_OK);
  EXPECT_TRUE(log.watch.empty()) << "nothing to watch yet";
  EXPECT_EQ(llmc_timeout_ms(c), -1);

  Collected got;
  ASSERT_EQ(llmc_generate_async(c, "Hi", nullptr, collect_token, collect_done, &got, nullptr), LLMC_OK);
  ASSERT_EQ(log.watch, std::vector<int>{LLMC_EV_READ});
  ASSERT_FALSE(log.timers.empty());
  EXPECT_GT(log.timers.back(), 0) << "the idle timeout";
  EXPECT_TRUE(got.done.empty()) << "callbacks run only inside llmc_process";
  run_until_idle(c);
  EXPECT_EQ(got.text, "Hello world");
  EXPECT_EQ(got.done, std::vector<llmc_code>{LLMC_OK});
  EXPECT_EQ(log.watch, (std::vector<int>{LLMC_EV_READ, 0}));
  EXPECT_EQ(log.timers.back(), -1);
  EXPECT_EQ(llmc_timeout_ms(c), -1);
  llmc_close(c);
  EXPECT_EQ(log.cleanups, 1);
}

TEST(LlmClient, CancelAndCloseEndEachRequestOnce) {
  FakeLlmd fake(scratch_dir() + "/s.sock", {stay_silent});
  llmc_client* c = connect_to(fake.path());
  Collected a, b, d;
  llmc_req_id ida = 0;
  ASSERT_EQ(llmc_generate_async(c, "a", nullptr, collect_token, collect_done, &a, &ida), LLMC_OK);
  ASSERT_EQ(llmc_generate_async(c, "b", nullptr, collect_token, collect_done, &b, nullptr), LLMC_OK);
  ASSERT_EQ(llmc_generate_async(c, "d", nullptr, collect_token, collect_done, &d, nullptr), LLMC_OK);
  ASSERT_NE(ida, 0u);
  EXPECT_EQ(llmc_pending(c), 3u);
  ASSERT_EQ(llmc_cancel(c, ida), LLMC_OK);
  EXPECT_TRUE(a.done.empty()) << "the done callback runs from llmc_process, not inside llmc_cancel";
  EXPECT_EQ(llmc_cancel(c, ida), LLMC_ERR_NOT_FOUND) << "cancelled once";
  pollfd p{llmc_fd(c), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 5000), 1) << "a cancelled request wakes the loop";
  ASSERT_EQ(llmc_process(c), LLMC_OK);
  EXPECT_EQ(a.done, std::vector<llmc_code>{LLMC_ERR_CANCELLED});
  EXPECT_EQ(llmc_pending(c), 2u);
  llmc_close(c);  // the two left end now, cancelled
  EXPECT_EQ(a.done.size(), 1u);
  EXPECT_EQ(b.done, std::vector<llmc_code>{LLMC_ERR_CANCELLED});
  EXPECT_EQ(d.done, std::vector<llmc_code>{LLMC_ERR_CANCELLED});
}

struct Reentry {
  llmc_client* c;
  llmc_code nested = LLMC_OK;
  bool closed = false;
};

TEST(LlmClient, CallbacksMayCancelAndCloseButNotBlock) {
  FakeLlmd fake(scratch_dir() + "/s.sock", {answer_streamed});
  llmc_client* c = connect_to(fake.path());
  Reentry r{c};
  auto on_token = [](void* user, llmc_req_id id, const char*, size_t) {
    auto* x = static_cast<Reentry*>(user);
    x->nested = llmc_generate(x->c, "again", nullptr, nullptr, nullptr, nullptr);
    llmc_cancel(x->c, id);  // its own request, from its own callback
  };
  auto on_done = [](void* user, const llmc_result* res) {
    auto* x = static_cast<Reentry*>(user);
    EXPECT_EQ(res->code, LLMC_ERR_CANCELLED);
    llmc_close(x->c);  // deferred: the client is freed when llmc_process returns
    x->closed = true;
  };
  ASSERT_EQ(llmc_generate_async(c, "Hi", nullptr, on_token, on_done, &r, nullptr), LLMC_OK);
  for (int i = 0; i < 2000 && !r.closed; ++i) {
    pollfd p{llmc_fd(c), POLLIN, 0};
    ::poll(&p, 1, 10);
    llmc_process(c);  // after the callback closed it, c is gone: this loop ends
  }
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.nested, LLMC_ERR_INVALID_ARGUMENT) << "a blocking call inside a callback is refused";
}

TEST(LlmClient, CppWrapperThrowsWithTheCodeAndCatchesCallbackExceptions) {
  try {
    llmc::Client none(scratch_dir() + "/none.sock");
    FAIL() << "connected to nothing";
  } catch (const llmc::Error& e) {
    EXPECT_EQ(e.code(), LLMC_ERR_UNAVAILABLE);
    EXPECT_NE(std::string(e.what()).find("not running"), std::string::npos) << e.what();
  }
  FakeLlmd fake(scratch_dir() + "/s.sock", {answer_streamed});
  llmc::Client c(fake.path());
  EXPECT_THROW(c.generate("Hi", {}, [](std::string_view) { throw std::runtime_error("from the callback"); }),
               std::runtime_error);
  std::string text;
  for (const std::string& token : c.stream("Hi")) text += token;
  EXPECT_EQ(text, "Hello world");
  llmc::Client moved = std::move(c);
  EXPECT_EQ(moved.generate("Hi").text, "Hello world");
}

}  // namespace
}  // namespace llmd::test
