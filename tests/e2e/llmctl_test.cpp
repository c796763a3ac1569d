// llmctl end to end against the real daemon, its --json mode and its exit codes.
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

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

TEST_F(LlmctlTest, RunWithAJsonSchemaPrintsJson) {
  const std::string schema =
      R"({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false})";
  auto check = [](const ProgramResult& r) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.out;
    EXPECT_TRUE(j.contains("ok") && j["ok"].is_boolean()) << r.out;
  };
  check(llmctl({"run", "--json-schema", schema, "--max-tokens", "100", "--temperature", "0", "Are you ok?"}));
  // From a file.
  const std::string file = scratch_dir() + "/schema.json";
  std::ofstream(file) << schema;
  check(llmctl({"run", "--json-schema", file, "--max-tokens", "100", "Are you ok?"}));
  // Usage errors: not with --raw, a missing file; llmd's or the library's refusals exit 1.
  EXPECT_EQ(llmctl({"run", "--raw", "--json-schema", schema, "Hi"}).exit_code, 2);
  EXPECT_EQ(llmctl({"run", "--json-schema", scratch_dir() + "/none.json", "Hi"}).exit_code, 2);
  auto bad = llmctl({"run", "--json-schema", "{not json", "Hi"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("json_schema"), std::string::npos) << bad.err;
  EXPECT_EQ(llmctl({"run", "--grammar", "root ::= ((", "Hi"}).exit_code, 1);
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

TEST_F(LlmctlTest, SessionsForkAndRewind) {
  const std::string id = call(daemon_.client(), "POST", "/v1/sessions", std::string("{}")).body["id"];
  for (const char* turn : {"Hi", "And then?"}) {
    auto run = llmctl({"run", "--session", id, "--max-tokens", "4", "--temperature", "0", turn});
    ASSERT_EQ(run.exit_code, 0) << run.err;
  }
  auto fork = llmctl({"sessions", "fork", id});
  ASSERT_EQ(fork.exit_code, 0) << fork.err;
  const std::string fid = fork.out.substr(0, fork.out.find('\n'));
  EXPECT_EQ(fid.rfind("ses_", 0), 0u) << fork.out;
  EXPECT_NE(fid, id);
  EXPECT_EQ(call(daemon_.client(), "GET", "/v1/sessions/" + fid).body["n_messages"], 4);
  auto rewind = llmctl({"sessions", "rewind", fid, "--drop-last", "2"});
  EXPECT_EQ(rewind.exit_code, 0) << rewind.err;
  EXPECT_NE(rewind.out.find(fid), std::string::npos) << rewind.out;
  EXPECT_NE(rewind.out.find("2 messages"), std::string::npos) << rewind.out;
  auto json = llmctl({"--json", "sessions", "rewind", fid, "--keep", "0"});
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out, nullptr, false)["n_messages"], 0) << json.out;
  auto forked_json = llmctl({"--json", "sessions", "fork", id});
  EXPECT_EQ(forked_json.exit_code, 0) << forked_json.err;
  EXPECT_EQ(nlohmann::json::parse(forked_json.out, nullptr, false)["n_messages"], 4) << forked_json.out;
  // Exit codes: usage 2, llmd's refusal 1 (naming the field), no such session 4.
  EXPECT_EQ(llmctl({"sessions", "fork"}).exit_code, 2);
  EXPECT_EQ(llmctl({"sessions", "rewind", id}).exit_code, 2);
  EXPECT_EQ(llmctl({"sessions", "rewind", id, "--drop-last", "two"}).exit_code, 2);
  EXPECT_EQ(llmctl({"sessions", "rewind", id, "--back", "2"}).exit_code, 2);
  auto half = llmctl({"sessions", "rewind", id, "--drop-last", "1"});
  EXPECT_EQ(half.exit_code, 1);
  EXPECT_NE(half.err.find("drop_last"), std::string::npos) << half.err;
  EXPECT_EQ(llmctl({"sessions", "fork", "ses_000000000000000000000000"}).exit_code, 4);
  // Prewarm: the session's tokens are in a slot afterwards; usage 2, no such session 4.
  auto warm = llmctl({"sessions", "prewarm", id});
  EXPECT_EQ(warm.exit_code, 0) << warm.err;
  EXPECT_NE(warm.out.find(" tokens in a slot"), std::string::npos) << warm.out;
  auto warm_json = llmctl({"--json", "sessions", "prewarm", id});
  EXPECT_EQ(warm_json.exit_code, 0) << warm_json.err;
  EXPECT_GT(nlohmann::json::parse(warm_json.out, nullptr, false).value("tokens", 0), 0) << warm_json.out;
  EXPECT_EQ(llmctl({"sessions", "prewarm"}).exit_code, 2);
  EXPECT_EQ(llmctl({"sessions", "prewarm", "ses_000000000000000000000000"}).exit_code, 4);
  EXPECT_EQ(llmctl({"sessions", "rewind", "ses_000000000000000000000000", "--keep", "0"}).exit_code, 4);
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
  for (const char* cmd : {"status", "models", "run", "chat", "sessions list", "sessions show", "sessions rm", "top"}) {
    EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd;
  }
}

// How top names this process's client for an app: "user/app" (the uid where it has no name).
std::string top_client_name(const std::string& app) {
  const passwd* pw = ::getpwuid(::getuid());
  return (pw != nullptr ? std::string(pw->pw_name) : std::to_string(::getuid())) + "/" + app;
}

TEST_F(LlmctlTest, TopJsonIsASnapshotOfTheScheduler) {
  auto before = llmctl({"top", "--json"});
  ASSERT_EQ(before.exit_code, 0) << before.err;
  auto j = nlohmann::json::parse(before.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << before.out;
  EXPECT_TRUE(j["scheduler"]["policy"] == "fair" || j["scheduler"]["policy"] == "fifo") << j.dump();
  EXPECT_TRUE(j["scheduler"]["clients"].is_array());
  EXPECT_TRUE(j["timestamp"].is_string());
  EXPECT_TRUE(j["slots"].is_array());
  EXPECT_TRUE(j["queue"].is_object());
  EXPECT_TRUE(j["kv"].is_object());

  auto b = greedy_body(8);
  b["prompt"] = "Once upon a time";
  b["app"] = "t1";
  ASSERT_EQ(call(daemon_.client(), "POST", "/v1/completions", b).status, 200u);
  auto after = llmctl({"--json", "top"});  // the global --json does the same
  ASSERT_EQ(after.exit_code, 0) << after.err;
  j = nlohmann::json::parse(after.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << after.out;
  const std::string client = std::to_string(::getuid()) + "/t1";
  const nlohmann::json* found = nullptr;
  for (const auto& c : j["scheduler"]["clients"]) {
    if (c["client"] == client) found = &c;
  }
  ASSERT_NE(found, nullptr) << client << " not in " << j["scheduler"].dump();
  EXPECT_EQ((*found)["app"], "t1");
  EXPECT_GT((*found)["output_tokens"].get<long>(), 0);
  // Its latency over the last minute: one request, TTFT within its end-to-end time.
  const auto& latency = (*found)["latency"];
  EXPECT_EQ(latency["requests"], 1) << latency.dump();
  EXPECT_GT(latency["ttft_ms"]["p50"].get<double>(), 0.0) << latency.dump();
  EXPECT_LE(latency["ttft_ms"]["p99"].get<double>(), latency["e2e_ms"]["p99"].get<double>()) << latency.dump();
}

TEST_F(LlmctlTest, TopPrintsFramesWhenNotOnATerminal) {
  auto b = greedy_body(8);
  b["prompt"] = "Once upon a time";
  b["app"] = "t1";
  ASSERT_EQ(call(daemon_.client(), "POST", "/v1/completions", b).status, 200u);
  auto r = llmctl({"top", "--iterations", "2", "--interval", "0.2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "no terminal escapes into a pipe";
  // Frames are separated by one blank line and hold none themselves.
  std::vector<std::string> frames;
  for (std::size_t start = 0; start < r.out.size();) {
    const auto end = r.out.find("\n\n", start);
    frames.push_back(r.out.substr(start, end == std::string::npos ? std::string::npos : end + 1 - start));
    start = end == std::string::npos ? r.out.size() : end + 2;
  }
  ASSERT_EQ(frames.size(), 2u) << r.out;
  for (const auto& f : frames) {
    EXPECT_EQ(f.rfind("llmd ", 0), 0u) << f;
    EXPECT_NE(f.find("policy fair"), std::string::npos) << f;
    EXPECT_NE(f.find("CLIENT"), std::string::npos) << f;
    EXPECT_NE(f.find(top_client_name("t1")), std::string::npos) << f;
    EXPECT_NE(f.find("SLOT"), std::string::npos) << f;
    EXPECT_NE(f.find("ram "), std::string::npos) << f;
  }
}

TEST_F(LlmctlTest, TopEndsCleanlyOnCtrlC) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const std::string socket = daemon_.socket(), binary = llmctl_binary();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::execl(binary.c_str(), binary.c_str(), "--socket", socket.c_str(), "top", "--interval", "0.2",
            static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  std::string seen;
  char buf[4096];
  ssize_t n;
  while (seen.find("\n\n") == std::string::npos && (n = ::read(out[0], buf, sizeof buf)) > 0) {
    seen.append(buf, static_cast<std::size_t>(n));  // until the second frame begins: it is refreshing
  }
  ASSERT_NE(seen.find("\n\n"), std::string::npos) << seen;
  ::kill(pid, SIGINT);
  while (::read(out[0], buf, sizeof buf) > 0) {
  }
  ::close(out[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(LlmctlTest, TopErrors) {
  auto down = run_program({llmctl_binary(), "--socket", scratch_dir() + "/none.sock", "top"});
  EXPECT_EQ(down.exit_code, 3);
  EXPECT_NE(down.err.find("not running"), std::string::npos) << down.err;
  EXPECT_TRUE(down.out.empty()) << down.out;
  EXPECT_EQ(llmctl({"top", "--interval", "0.1"}).exit_code, 2);
  EXPECT_EQ(llmctl({"top", "--interval", "61"}).exit_code, 2);
  EXPECT_EQ(llmctl({"top", "--iterations", "0"}).exit_code, 2);
  EXPECT_EQ(llmctl({"top", "--sort", "name"}).exit_code, 2);
  EXPECT_EQ(llmctl({"top", "extra"}).exit_code, 2);
}

TEST_F(LlmctlTest, SocketFromTheEnvironment) {
  auto r = run_program({llmctl_binary(), "status"}, {}, {"LLMD_SOCKET=" + daemon_.socket()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace llmd::test
