// libllmclient's asynchronous core against the real llmd: several generations in flight on one
// client and on several clients (driven by a small poll loop, as an app's loop would), cancelling,
// and the examples an app developer starts from (built with the project, run here).
#include <poll.h>

#include <map>
#include <sstream>
#include <thread>

#include "llmclient/llmclient.h"
#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

// What happened, in order, across every request of a test: "A" a token of request A, "A.done".
struct Timeline {
  std::vector<std::string> events;
  std::map<char, std::string> text;
  std::map<char, std::vector<llmc_code>> done;
  std::map<char, std::string> result_text;
  std::map<char, int> completion_tokens;
};

struct Job {
  char tag;
  Timeline* t;
  llmc_client* cancel_on_first_token = nullptr;
};

void on_token(void* user, llmc_req_id id, const char* text, size_t len) {
  auto* j = static_cast<Job*>(user);
  j->t->events.push_back(std::string(1, j->tag));
  j->t->text[j->tag].append(text, len);
  if (j->cancel_on_first_token != nullptr) {
    EXPECT_EQ(llmc_cancel(std::exchange(j->cancel_on_first_token, nullptr), id), LLMC_OK);
  }
}

void on_done(void* user, const llmc_result* r) {
  auto* j = static_cast<Job*>(user);
  j->t->events.push_back(std::string(1, j->tag) + ".done");
  j->t->done[j->tag].push_back(r->code);
  j->t->result_text[j->tag] = r->text;
  j->t->completion_tokens[j->tag] = r->completion_tokens;
  EXPECT_TRUE(r->code == LLMC_OK || r->code == LLMC_ERR_CANCELLED) << r->message;
}

// An app's loop in miniature: poll every client's fd (and the nearest deadline), then process.
void run_loop(const std::vector<llmc_client*>& clients) {
  for (int round = 0; round < 100000; ++round) {
    std::vector<pollfd> fds;
    long timeout = -1;
    std::size_t pending = 0;
    for (llmc_client* c : clients) {
      fds.push_back({llmc_fd(c), POLLIN, 0});
      const long t = llmc_timeout_ms(c);
      if (t >= 0 && (timeout < 0 || t < timeout)) timeout = t;
      pending += llmc_pending(c);
    }
    if (pending == 0) return;
    ::poll(fds.data(), fds.size(), timeout < 0 ? 30000 : static_cast<int>(timeout));
    for (llmc_client* c : clients) ASSERT_EQ(llmc_process(c), LLMC_OK) << llmc_last_error(c);
  }
  FAIL() << "requests still pending";
}

std::size_t index_of(const std::vector<std::string>& v, const std::string& x) {
  return static_cast<std::size_t>(std::find(v.begin(), v.end(), x) - v.begin());
}

class LlmClientAsyncTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.start()) << daemon_.log(); }
  llmc_client* connect() {
    llmc_client* c = nullptr;
    EXPECT_EQ(llmc_connect(daemon_.socket().c_str(), &c), LLMC_OK) << llmc_last_error(nullptr);
    return c;
  }
  static llmc_gen_params tokens(int n) {
    llmc_gen_params p;
    llmc_gen_params_init(&p);
    p.mode = LLMC_MODE_COMPLETION;
    p.max_tokens = n;
    p.ignore_eos = 1;  // exactly n tokens each: the generations overlap
    return p;
  }
  int in_flight(llmc_client* c) {
    llmc_daemon_status* st = nullptr;
    EXPECT_EQ(llmc_status_get(c, &st), LLMC_OK) << llmc_last_error(c);
    const int n = st != nullptr ? st->in_flight + st->running + st->queued : -1;
    llmc_free(st);
    return n;
  }
  DaemonProcess daemon_{scratch_dir()};
};

TEST_F(LlmClientAsyncTest, SeveralGenerationsInFlightOnOneClientInterleave) {
  llmc_client* c = connect();
  Timeline t;
  Job jobs[3] = {{'A', &t}, {'B', &t}, {'C', &t}};
  // A is long and B and C short, all started at once: B and C stream and finish while A runs
  // (unless llmd served them hundreds of steps late), whatever the speed of the machine.
  const std::map<char, int> n_tokens = {{'A', 600}, {'B', 24}, {'C', 24}};
  const char* prompts[3] = {"Once upon a time", "The little dog", "Tom and Sue went"};
  for (int i = 0; i < 3; ++i) {
    const llmc_gen_params p = tokens(n_tokens.at(jobs[i].tag));
    ASSERT_EQ(llmc_generate_async(c, prompts[i], &p, on_token, on_done, &jobs[i], nullptr), LLMC_OK) << llmc_last_error(c);
  }
  EXPECT_EQ(llmc_pending(c), 3u);
  run_loop({c});
  for (const char tag : {'A', 'B', 'C'}) {
    EXPECT_EQ(t.done[tag], std::vector<llmc_code>{LLMC_OK}) << tag;
    EXPECT_EQ(t.text[tag], t.result_text[tag]) << tag;
    EXPECT_EQ(t.completion_tokens[tag], n_tokens.at(tag)) << tag;
  }
  EXPECT_LT(index_of(t.events, "A"), index_of(t.events, "B.done")) << "A streamed while B was running";
  EXPECT_LT(index_of(t.events, "B.done"), index_of(t.events, "A.done")) << "B finished while A was running";
  EXPECT_LT(index_of(t.events, "C.done"), index_of(t.events, "A.done")) << "C finished while A was running";
  llmc_close(c);
}

TEST_F(LlmClientAsyncTest, SeveralClientsOnOneLoop) {
  llmc_client* c1 = connect();
  llmc_client* c2 = connect();
  Timeline t;
  Job a{'A', &t}, b{'B', &t};
  const llmc_gen_params p = tokens(16);
  ASSERT_EQ(llmc_generate_async(c1, "Once upon a time", &p, on_token, on_done, &a, nullptr), LLMC_OK);
  ASSERT_EQ(llmc_generate_async(c2, "Once upon a time", &p, on_token, on_done, &b, nullptr), LLMC_OK);
  run_loop({c1, c2});
  EXPECT_EQ(t.done['A'], std::vector<llmc_code>{LLMC_OK});
  EXPECT_EQ(t.done['B'], std::vector<llmc_code>{LLMC_OK});
  EXPECT_EQ(t.completion_tokens['A'], 16);
  EXPECT_EQ(t.completion_tokens['B'], 16);
  llmc_close(c1);
  llmc_close(c2);
}

TEST_F(LlmClientAsyncTest, CancelEndsTheRequestOnceAndLlmdStopsIt) {
  llmc_client* c = connect();
  Timeline t;
  Job cancelled{'A', &t, c}, other{'B', &t};
  const llmc_gen_params long_one = tokens(1900);
  const llmc_gen_params short_one = tokens(8);
  ASSERT_EQ(llmc_generate_async(c, "Once upon a time", &long_one, on_token, on_done, &cancelled, nullptr), LLMC_OK);
  ASSERT_EQ(llmc_generate_async(c, "The little dog", &short_one, on_token, on_done, &other, nullptr), LLMC_OK);
  run_loop({c});
  EXPECT_EQ(t.done['A'], std::vector<llmc_code>{LLMC_ERR_CANCELLED}) << "done once, cancelled";
  EXPECT_EQ(t.done['B'], std::vector<llmc_code>{LLMC_OK}) << "the other request is untouched";
  EXPECT_EQ(t.completion_tokens['B'], 8);
  int n = -1;
  for (int i = 0; i < 500 && (n = in_flight(c)) != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(n, 0) << "llmd still runs the cancelled generation";
  const auto st = call(daemon_.client(), "GET", "/v1/status");
  EXPECT_LT(st.body["counters"]["tokens_generated"].get<int>(), 1900) << "the cancelled generation ran to its end";
  llmc_close(c);
}

// The examples, as an app developer would run them: llmd found through LLMD_SOCKET.
class LlmClientExamples : public LlmClientAsyncTest {
 protected:
  ProgramResult run(const char* binary) { return run_program({binary}, {}, {"LLMD_SOCKET=" + daemon_.socket()}); }
};

TEST(LlmClientExamplesLibuv, LibuvExampleInterleavesThreeGenerationsOnOneLoop) {
  // A model with real shapes (random weights): ~100 times slower per token than stories260K, so
  // the example's three requests, sent at once, are all admitted long before the first one could
  // end (stories260K may finish one in a few milliseconds, before another's request is read), and
  // it practically never samples an early end of text.
  DaemonOptions o;
  o.model = generated_model("smollm2-135m-q8_0");
  DaemonProcess daemon(scratch_dir(), o);
  ASSERT_TRUE(daemon.start()) << daemon.log();
  const auto r = run_program({LLMC_TEST_EXAMPLE_LIBUV}, {}, {"LLMD_SOCKET=" + daemon.socket()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  auto first = [&](const std::string& prefix) {
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].rfind(prefix, 0) == 0) return i;
    }
    return lines.size();
  };
  for (const char* tag : {"[A] finished", "[B] finished", "[C] finished"}) {
    EXPECT_LT(first(tag), lines.size()) << tag << " missing in:\n" << r.out;
  }
  EXPECT_LT(first("[B] "), first("[A] finished")) << "B's tokens arrive while A runs:\n" << r.out;
  EXPECT_LT(first("[C] "), first("[A] finished")) << r.out;
}

TEST_F(LlmClientExamples, CAndCppExamplesPrintAnAnswer) {
  const auto c = run(LLMC_TEST_EXAMPLE_BLOCKING);
  EXPECT_EQ(c.exit_code, 0) << c.err;
  const auto counts = c.out.find(" generated, finish: ");
  EXPECT_NE(counts, std::string::npos) << c.out;
  EXPECT_GT(c.out.rfind("\n(", counts), 0u) << "the answer comes before the counts: " << c.out;
  const auto cpp = run(LLMC_TEST_EXAMPLE_STREAMING);
  EXPECT_EQ(cpp.exit_code, 0) << cpp.err;
  EXPECT_NE(cpp.out.find("> Tell me about a cat."), std::string::npos) << cpp.out;
  EXPECT_NE(cpp.out.find("tokens, "), std::string::npos) << cpp.out;
}

TEST(LlmClientExamplesDown, ExamplesSayHowToStartLlmd) {
  const auto r = run_program({LLMC_TEST_EXAMPLE_BLOCKING}, {}, {"LLMD_SOCKET=" + scratch_dir() + "/none.sock"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("systemctl start llmd"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace llmd::test
