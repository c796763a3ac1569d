// llmctl end to end against the real daemon, its --json mode and its exit codes.
#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

class LlmctlTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.start()) << daemon_.log(); }
  ProgramResult llmctl(std::vector<std::string> args, const std::string& input = {}) {
    args.insert(args.begin(), {llmctl_binary(), "--socket", daemon_.socket()});
    return run_program(args, input);
  }
  DaemonProcess daemon_{scratch_dir()};
};

TEST_F(LlmctlTest, StatusAndModels) {
  auto s = llmctl({"status"});
  EXPECT_EQ(s.exit_code, 0) << s.err;
  EXPECT_NE(s.out.find("model:"), std::string::npos) << s.out;
  auto j = llmctl({"--json", "status"});
  EXPECT_EQ(j.exit_code, 0);
  auto parsed = nlohmann::json::parse(j.out, nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << j.out;
  EXPECT_EQ(parsed["model"]["architecture"], "llama");
  auto m = llmctl({"models"});
  EXPECT_EQ(m.exit_code, 0);
  EXPECT_NE(m.out.find("llama"), std::string::npos);
}

TEST_F(LlmctlTest, RunStreamsTheAnswer) {
  auto r = llmctl({"run", "--raw", "--max-tokens", "16", "--temperature", "0", "Once upon a time"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto b = greedy_body(16);
  b["prompt"] = "Once upon a time";
  const std::string expected = call(daemon_.client(), "POST", "/v1/completions", b).body["choices"][0]["text"];
  EXPECT_EQ(r.out, expected + "\n");
  auto j = llmctl({"--json", "run", "--max-tokens", "4", "Hello"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto parsed = nlohmann::json::parse(j.out, nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << j.out;
  EXPECT_EQ(parsed["object"], "chat.completion");
  auto piped = llmctl({"run", "--max-tokens", "4"}, "a prompt from stdin");
  EXPECT_EQ(piped.exit_code, 0) << piped.err;
}

TEST_F(LlmctlTest, ChatKeepsHistoryInASession) {
  auto c = llmctl({"chat", "--system", "Tell stories."}, "Hello\nAnd then?\n/exit\n");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const auto pos = c.err.find("ses_");
  ASSERT_NE(pos, std::string::npos) << c.err;
  const std::string id = c.err.substr(pos, 28);
  auto shown = llmctl({"--json", "sessions", "show", id});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  auto s = nlohmann::json::parse(shown.out);
  ASSERT_EQ(s["messages"].size(), 5u);
  EXPECT_EQ(s["messages"][3]["content"], "And then?");
  // Continue it.
  auto more = llmctl({"chat", "--session", id}, "One more\n");
  EXPECT_EQ(more.exit_code, 0) << more.err;
  EXPECT_EQ(nlohmann::json::parse(llmctl({"--json", "sessions", "show", id}).out)["messages"].size(), 7u);
}

TEST_F(LlmctlTest, SessionsListShowRemove) {
  const std::string id = call(daemon_.client(), "POST", "/v1/sessions", std::string("{}")).body["id"];
  auto run = llmctl({"run", "--session", id, "--max-tokens", "4", "Hi"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  auto list = llmctl({"sessions", "list"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find(id), std::string::npos);
  auto show = llmctl({"sessions", "show", id});
  EXPECT_NE(show.out.find("[user]"), std::string::npos) << show.out;
  auto rm = llmctl({"sessions", "rm", id});
  EXPECT_EQ(rm.exit_code, 0);
  auto gone = llmctl({"sessions", "show", id});
  EXPECT_EQ(gone.exit_code, 4);
  EXPECT_NE(gone.err.find(id), std::string::npos);
}

TEST_F(LlmctlTest, ExitCodes) {
  EXPECT_EQ(llmctl({}).exit_code, 2);
  EXPECT_EQ(llmctl({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(llmctl({"run"}, "").exit_code, 2);
  auto bad = llmctl({"run", "--max-tokens", "0", "x"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("max_tokens"), std::string::npos) << bad.err;
  auto down = run_program({llmctl_binary(), "--socket", scratch_dir() + "/none.sock", "status"});
  EXPECT_EQ(down.exit_code, 3);
  EXPECT_NE(down.err.find("not running"), std::string::npos) << down.err;
  auto help = run_program({llmctl_binary(), "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* cmd : {"status", "models", "run", "chat", "sessions list", "sessions show", "sessions rm"}) {
    EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd;
  }
}

TEST_F(LlmctlTest, SocketFromTheEnvironment) {
  auto r = run_program({llmctl_binary(), "status"}, {}, {"LLMD_SOCKET=" + daemon_.socket()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace llmd::test
