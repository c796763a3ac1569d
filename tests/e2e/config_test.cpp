// The configuration with the real llmd: `llmd --check-config` runs exactly the checks start-up runs
// (a value start-up refuses is refused by --check-config, with the same message, both exit 2),
// config-file errors name FILE:LINE, and SIGHUP takes the reloadable keys the settings table names.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

// llmd with the arguments, and --check-config too; `timeout` guards the start-up run against a
// daemon that wrongly starts (it would serve until killed: exit 124).
struct Both {
  ProgramResult checked, started;
};
Both check_and_start(const std::string& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {llmd_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  // Defaults for what the case does not give: a scratch socket and state directory, no bus.
  const std::vector<std::pair<std::string, std::string>> defaults = {
      {"--config", "/dev/null"}, {"--model", stories_path()}, {"--socket", dir + "/llmd.sock"},
      {"--state-dir", dir + "/state"}, {"--threads", "1"}, {"--bus", "none"}};
  for (const auto& [flag, value] : defaults) {
    if (std::find(args.begin(), args.end(), flag) == args.end()) argv.insert(argv.end(), {flag, value});
  }
  Both out;
  auto check = argv;
  check.push_back("--check-config");
  out.checked = run_program(check);
  auto start = argv;
  start.insert(start.begin(), {"/usr/bin/timeout", "60"});
  out.started = run_program(start);
  return out;
}

TEST(ConfigCheck, RefusesWhatStartupRefusesWithTheSameMessage) {
  const std::string dir = scratch_dir();
  write_file(dir + "/file", "");
  std::filesystem::create_directories(dir + "/kvfile");
  write_file(dir + "/kvfile/kv", "");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--kv-type", "bogus"}, "kv-type"},  // said "configuration OK" and failed only at start-up
      {{"--flash-attn", "maybe"}, "flash-attn"},
      {{"--kv-policy", "attention"}, "kv-policy"},  // needs flash-attn = off
      {{"--state-dir", dir + "/file/state"}, "state-dir"},
      {{"--state-dir", dir + "/kvfile"}, "state-dir"},  // its kv/ is a file: the chunk store cannot open
      {{"--socket", dir + "/file/llmd.sock"}, "socket"},
      {{"--socket", dir + "/" + std::string(120, 's')}, "socket"},
      {{"--slots", "0"}, "slots"},
      {{"--batch", "2", "--slots", "4"}, "batch"},
      {{"--weight", "alice"}, "weight"},
      {{"--admin-group", "a:b"}, "admin-group"},
      {{"--log-level", "verbose"}, "log-level"},
      {{"--default-max-tokens", "5000"}, "default-max-tokens"},
  };
  for (const auto& [args, key] : cases) {
    SCOPED_TRACE(args[0] + " " + args[1]);
    const auto r = check_and_start(dir, args);
    EXPECT_EQ(r.checked.exit_code, 2) << r.checked.out << r.checked.err;
    EXPECT_EQ(r.started.exit_code, 2) << r.started.err;
    EXPECT_NE(r.checked.err.find("llmd: " + key + ": "), std::string::npos) << r.checked.err;
    EXPECT_EQ(r.started.err, r.checked.err);
    EXPECT_EQ(r.checked.out.find("configuration OK"), std::string::npos) << r.checked.out;
  }
}

TEST(ConfigCheck, FileErrorsNameTheFileAndLine) {
  const std::string dir = scratch_dir();
  const std::string conf = dir + "/llmd.conf";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"slots = 2\n[engine]\nctx = 1024\n", conf + ":3: sections such as '[engine]'"},
      {"slots = 2\n\nfoo = 1\n", conf + ":4: unknown key 'foo'"},
      {"slots = 2\n\nsocket = \"/tmp/x.sock\n", conf + ":4: socket: stray quote"},
      {"slots = 2\nkv-type = bogus\n", conf + ":3: kv-type: 'bogus' is not a ggml type"},
      {"parallel = 8\nbatch = 4\n", conf + ":3: batch: must be at least parallel"},
  };
  for (const auto& [body, expected] : cases) {
    SCOPED_TRACE(body);
    write_file(conf, "# llmd.conf\n" + body);
    const auto r = check_and_start(dir, {"--config", conf});
    EXPECT_EQ(r.checked.exit_code, 2);
    EXPECT_EQ(r.started.exit_code, 2);
    EXPECT_NE(r.checked.err.find("llmd: " + expected), std::string::npos) << r.checked.err;
    EXPECT_EQ(r.started.err, r.checked.err);
  }
  // A quoted value may hold what an unquoted one may not; and it passes.
  write_file(conf, "socket = \"" + dir + "/a # b.sock\"\n");
  const auto ok = run_program({llmd_binary(), "--config", conf, "--model", stories_path(), "--state-dir",
                               dir + "/state", "--check-config"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("socket = \"" + dir + "/a # b.sock\"\n"), std::string::npos) << ok.out;
}

bool wait_for_log(const DaemonProcess& d, const std::string& text) {
  for (int i = 0; i < 250; ++i) {
    if (d.log().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// SIGHUP applies the keys the table marks live, keeps the others (a warning per key), and keeps the
// whole running configuration when the file is invalid (naming FILE:LINE) or when the new values
// are invalid together with the running values of the restart keys.
TEST(ConfigReload, LiveKeysApplyRestartKeysWarnInvalidFilesAreRefused) {
  const std::string dir = scratch_dir();
  const std::string conf = dir + "/llmd.conf";
  write_file(conf, "max-body-bytes = 1048576\n");
  DaemonOptions o;
  o.args = {"--config", conf};
  DaemonProcess d(dir, o);
  ASSERT_TRUE(d.start()) << d.log();
  const nlohmann::json big = {{"prompt", std::string(3000, 'a')}, {"max_tokens", 1}};

  write_file(conf, "max-body-bytes = 2048\nkv-type = q8_0\nmax-in-flight = 7\n");
  ::kill(d.pid(), SIGHUP);
  ASSERT_TRUE(wait_for_log(d, "SIGHUP: configuration reloaded (applied: max-body-bytes, max-in-flight)")) << d.log();
  EXPECT_TRUE(wait_for_log(d, "SIGHUP: kv-type changed; restart llmd to apply it")) << d.log();
  EXPECT_EQ(call(d.client(), "POST", "/v1/completions", big).status, 413u);

  write_file(conf, "max-body-bytes = 1048576\n\nslotz = 3\n");
  ::kill(d.pid(), SIGHUP);
  ASSERT_TRUE(wait_for_log(d, "SIGHUP: the configuration is invalid, keeping the current one: " + conf +
                                  ":3: unknown key 'slotz'"))
      << d.log();
  EXPECT_EQ(call(d.client(), "POST", "/v1/completions", big).status, 413u);

  // Above the running ctx (2048, from DaemonProcess's command line): the file's ctx does not count.
  write_file(conf, "max-body-bytes = 1048576\nctx = 8192\ndefault-max-tokens = 5000\n");
  ::kill(d.pid(), SIGHUP);
  ASSERT_TRUE(wait_for_log(d, "default-max-tokens: must be between 1 and ctx")) << d.log();
  EXPECT_EQ(call(d.client(), "POST", "/v1/completions", big).status, 413u);
}

}  // namespace
}  // namespace llmd::test
