// The settings table and the configuration parser (daemon/settings.h, daemon/config.h), without a
// model: every key's bad values are refused by --check-config and by start-up alike, naming the
// key (and FILE:LINE when they come from the file); the file's syntax errors; describe() reads back.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/settings.h"
#include "engine/ggml_types.h"
#include "tests/support/test_env.h"

namespace llmd::daemon {
namespace {

using test::scratch_dir;
using test::write_file;

// A model path: check_config never opens it (the model is --check-config's last step, in main).
const std::string kModel = "/nonexistent/model.gguf";

// At least one bad value for every key: a value of the wrong type and, where the key has one, a
// value outside its range or not among its names. The test fails for a key missing here, so a new
// row in the table needs its bad values too.
const std::map<std::string, std::vector<std::string>> kBadValues = {
    {"model", {""}},
    {"socket", {"", std::string(200, 's')}},
    {"bus", {"bogus", ":nothing"}},
    {"state-dir", {"", "/dev/null/state"}},
    {"threads", {"-1", "513", "many"}},
    {"slots", {"0", "257", "four", "-1"}},
    {"parallel", {"0", "257", "two", "-1"}},
    {"ctx", {"63", "1048577", "4k"}},
    {"batch", {"0", "65537", "x"}},
    {"flash-attn", {"maybe", "ON"}},
    {"kv-type", {"bogus", "F16"}},
    {"restore", {"never"}},
    {"chunk-tokens", {"0", "4097"}},
    {"kv-ram-mib", {"16777217", "lots"}},
    {"kv-disk-mib", {"67108865", "-5"}},
    {"kv-policy", {"lossy"}},
    {"kv-target-ratio", {"0", "1.5", "nan", "half"}},
    {"kv-disk-zstd", {"maybe", ""}},
    {"kv-write-back-mib", {"0", "16777217", "-1", "many"}},
    {"prefix-cache-entries-per-user", {"1048577", "-1", "some"}},
    {"prefix-cache-mib-per-user", {"0", "16777217", "-1", "lots"}},
    {"keep-resident", {"2"}},
    {"scheduler", {"lottery"}},
    {"weight", {"alice", "alice=0", "alice=x", "a:b=2"}},
    {"preempt-gap", {"-1", "2e12", "inf"}},
    {"pace", {"-1", "2e12", "inf"}},
    {"prefill-chunk", {"-1", "65537", "some"}},
    {"log-level", {"verbose", "INFO"}},
    {"log-content", {"sometimes"}},
    {"admin-group", {"", "two words", "a:b"}},
    {"max-body-bytes", {"1023", "268435457"}},
    {"max-header-bytes", {"1023", "1048577"}},
    {"request-timeout-ms", {"99", "4294967296"}},
    {"header-timeout-ms", {"99"}},
    {"write-timeout-ms", {"99"}},
    {"max-connections", {"0"}},
    {"max-connections-per-user", {"-1", "4294967296", "1.5"}},
    {"max-sessions-per-user", {"0"}},
    {"max-stored-mib-per-user", {"0", "1073741825"}},
    {"max-queued-per-client", {"0"}},
    {"max-running-per-client", {"x", "-2"}},
    {"max-prompt-tokens", {"1e3", "+-1"}},
    {"max-in-flight", {"0"}},
    {"disk-reserve-mib", {"2000000000", "lots"}},
    {"default-max-tokens", {"0", "4097", "-1"}},
    {"context-overflow", {"Sliding", "drop-oldest", "", "truncate"}},
    {"context-fill-target", {"9", "101", "half", "-1"}},
    {"shutdown-timeout-ms", {"soon", "4294967296"}},
};

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override { ::unsetenv("LLMD_MODEL"); }

  static Result<ParsedArgs> parse(std::vector<std::string> args) {
    args.insert(args.begin(), "llmd");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    return parse_args(static_cast<int>(argv.size()), argv.data());
  }
};

TEST_F(ConfigTest, EveryKeyHasBadValuesInThisTest) {
  for (const auto& s : settings()) EXPECT_TRUE(kBadValues.count(std::string(s.key))) << s.key;
  for (const auto& [key, values] : kBadValues) EXPECT_NE(find_setting(key), nullptr) << key;
}

// --check-config and start-up (Action::run) run the same checks: each bad value fails both, with
// the same message, naming the key; given in the file, the message starts with FILE:LINE.
TEST_F(ConfigTest, EveryBadValueFailsCheckConfigAndStartupNamingTheKey) {
  const std::string dir = scratch_dir();
  for (const auto& [key, values] : kBadValues) {
    for (const auto& value : values) {
      SCOPED_TRACE(key + " = '" + value + "'");
      std::vector<std::string> base = {"--config", "/dev/null"};
      if (key != "model") base.insert(base.end(), {"--model", kModel});
      base.insert(base.end(), {"--" + key, value});
      auto check_args = base;
      check_args.push_back("--check-config");
      const auto checked = parse(check_args);
      ASSERT_FALSE(checked);
      EXPECT_EQ(checked.error().code(), Errc::invalid_argument);
      EXPECT_NE(checked.error().message().find(key), std::string::npos) << checked.error().message();
      const auto started = parse(base);
      ASSERT_FALSE(started);
      EXPECT_EQ(started.error().message(), checked.error().message());

      // From the file, on its line 2.
      const std::string file = dir + "/bad.conf";
      std::string body = "# line 1\n" + key + " = " + (value.empty() ? "" : "\"" + value + "\"") + "\n";
      if (key != "model") body += "model = " + kModel + "\n";
      write_file(file, body);
      const auto from_file = parse({"--config", file, "--check-config"});
      ASSERT_FALSE(from_file);
      const std::string& m = from_file.error().message();
      EXPECT_NE(m.find(key), std::string::npos) << m;
      if (key != "model") {
        EXPECT_EQ(m.rfind(file + ":2: " + key + ": ", 0), 0u) << m;
      }
      const auto started_from_file = parse({"--config", file});
      ASSERT_FALSE(started_from_file);
      EXPECT_EQ(started_from_file.error().message(), m);

      // validate() (what parse_args runs) on a Config holding the value, where the value has the
      // right type: the range and rules between keys are its, not the parser's.
      Config c;
      c.model = kModel;
      if (key == "weight") c.weights.clear();
      if (key == "model") c.model.clear();
      const Setting* s = find_setting(key);
      if (s->parse(c, value)) {
        const auto st = validate(c);
        ASSERT_FALSE(st) << "validate accepts it";
        EXPECT_NE(st.error().message().find(key), std::string::npos) << st.error().message();
      }
    }
  }
}

TEST_F(ConfigTest, TheDefaultsAndGoodValuesPass) {
  Config c;
  c.model = kModel;
  EXPECT_TRUE(validate(c));
  EXPECT_EQ(engine::ggml_type_to_name(Config{}.kv_type), "f16");  // kKvTypeF16
  const auto ok = parse({"--config", "/dev/null", "--model", kModel, "--kv-type", "q8_0", "--flash-attn", "off",
                         "--kv-policy", "attention", "--log-level", "debug", "--scheduler", "fifo", "--restore",
                         "recompute", "--keep-resident", "no", "--weight", "alice=2", "--weight", "1000/editor=0.5",
                         "--state-dir", scratch_dir() + "/new/state", "--check-config"});
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->action, Action::check_config);
  EXPECT_EQ(engine::ggml_type_to_name(ok->config.kv_type), "q8_0");
  EXPECT_EQ(ok->config.flash_attn, engine::FlashAttn::off);
  EXPECT_EQ(ok->config.kv_policy, kvstore::PolicyKind::attention);
  EXPECT_EQ(ok->config.log_level, LogLevel::debug);
  EXPECT_EQ(ok->config.scheduler, scheduler::Policy::fifo);
  EXPECT_EQ(ok->config.restore, Restore::recompute);
  EXPECT_FALSE(ok->config.keep_resident);
  EXPECT_EQ(ok->config.weights, (std::vector<std::string>{"alice=2", "1000/editor=0.5"}));
}

TEST_F(ConfigTest, RulesBetweenKeysNameTheKeyAndItsLine) {
  const std::string file = scratch_dir() + "/llmd.conf";
  write_file(file, "model = " + kModel + "\nkv-policy = attention\n");
  auto r = parse({"--config", file});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message().rfind(file + ":2: kv-policy: attention needs flash-attn = off", 0), 0u)
      << r.error().message();
  write_file(file, "model = " + kModel + "\nparallel = 8\nbatch = 4\n");
  r = parse({"--config", file, "--check-config"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message().rfind(file + ":3: batch: must be at least parallel", 0), 0u) << r.error().message();
  // From the command line: no FILE:LINE.
  r = parse({"--config", "/dev/null", "--model", kModel, "--ctx", "128", "--default-max-tokens", "200"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "default-max-tokens: must be between 1 and ctx");
}

TEST_F(ConfigTest, FileSyntaxErrorsNameTheFileAndLine) {
  const std::string file = scratch_dir() + "/llmd.conf";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"foo = 1", ":3: unknown key 'foo'"},
      {"slotz = 1", ":3: unknown key 'slotz' (did you mean slots?)"},
      {"max-body-byte = 1", ":3: unknown key 'max-body-byte' (did you mean max-body-bytes?)"},
      {"[llmd]", ":3: sections such as '[llmd]' are not part of llmd.conf"},
      {"slots", ":3: expected KEY = VALUE, found 'slots'"},
      {"slots # = 4", ":3: expected KEY = VALUE"},
      {"= 4", ":3: a value without a key"},
      {"socket = \"/run/x.sock", ":3: socket: stray quote: '\"/run/x.sock' has no closing \""},
      {"socket = /run/x\".sock", ":3: socket: stray quote in '/run/x\".sock'"},
      {"socket = '/run/x.sock", ":3: socket: stray quote"},
      {"socket = \"/run/a\" b", ":3: socket: stray quote: text after the quoted value"},
      {"slots = 2\nslots = 3", ":4: slots is set twice (first on line 3)"},
      {"slots = 0", ":3: slots: must be between 1 and 256"},
  };
  for (const auto& [line, expected] : cases) {
    write_file(file, "model = " + kModel + "\n\n" + line + "\n");
    const auto r = parse({"--config", file, "--check-config"});
    ASSERT_FALSE(r) << line;
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    EXPECT_EQ(r.error().message().rfind(file + expected, 0), 0u) << line << " -> " << r.error().message();
  }
}

TEST_F(ConfigTest, FileFormat) {
  const std::string file = scratch_dir() + "/llmd.conf";
  write_file(file,
             "  # comment\r\n"
             "model = \"/models/a # b.gguf\"  # a quoted value keeps its '#'\r\n"
             "socket=/tmp/x.sock\r\n"
             "admin-group = 'wheel'\n"
             "weight = alice=2\n"
             "weight = bob=3 # repeatable\n"
             "kv-disk-zstd = YES\n");
  const auto r = parse({"--config", file, "--weight", "carol=4"});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->config.model, "/models/a # b.gguf");
  EXPECT_EQ(r->config.socket, "/tmp/x.sock");
  EXPECT_EQ(r->config.admin_group, "wheel");
  EXPECT_TRUE(r->config.kv_disk_zstd);
  // The command line's weights, then the file's; every other key: the command line wins.
  EXPECT_EQ(r->config.weights, (std::vector<std::string>{"carol=4", "alice=2", "bob=3"}));
  const auto over = parse({"--config", file, "--socket", "/tmp/y.sock"});
  ASSERT_TRUE(over);
  EXPECT_EQ(over->config.socket, "/tmp/y.sock");
  // A bad value the command line overrides is not read.
  write_file(file, "model = " + kModel + "\nslots = 0\n");
  EXPECT_TRUE(parse({"--config", file, "--slots", "2"}));
}

TEST_F(ConfigTest, DescribeReadsBackToTheSameConfiguration) {
  const std::string dir = scratch_dir();
  const auto r = parse({"--config", "/dev/null", "--model", dir + "/odd # 'name'.gguf", "--socket", " /tmp/lead.sock",
                        "--kv-type", "q4_0", "--weight", "alice=2", "--kv-target-ratio", "0.25"});
  ASSERT_TRUE(r) << r.error().message();
  const std::string described = describe(r->config);
  EXPECT_NE(described.find("kv-type = q4_0\n"), std::string::npos) << described;
  EXPECT_NE(described.find("weight = alice=2\n"), std::string::npos) << described;
  write_file(dir + "/described.conf", described);
  const auto again = parse({"--config", dir + "/described.conf"});
  ASSERT_TRUE(again) << again.error().message() << "\n" << described;
  EXPECT_EQ(again->config.model, r->config.model);
  EXPECT_EQ(again->config.socket, " /tmp/lead.sock");
  EXPECT_EQ(describe(again->config), described);
}

TEST_F(ConfigTest, TheTableSaysWhatSighupApplies) {
  // The split the man pages document (llmd.conf(5) RELOADING; check_man.sh checks the pages
  // against --help's two groups).
  std::set<std::string> live;
  for (const auto& s : settings()) {
    if (s.reload == Reload::live) live.emplace(s.key);
  }
  EXPECT_EQ(live, (std::set<std::string>{"log-level", "log-content", "max-body-bytes", "max-header-bytes",
                                          "request-timeout-ms", "header-timeout-ms", "write-timeout-ms",
                                          "max-connections", "max-connections-per-user", "max-sessions-per-user",
                                          "max-stored-mib-per-user", "max-queued-per-client", "max-prompt-tokens",
                                          "max-in-flight", "disk-reserve-mib", "default-max-tokens",
                                          "context-overflow", "context-fill-target", "shutdown-timeout-ms"}));
  // A restart key's value is kept by copy, and compared by same.
  const Setting* slots = find_setting("slots");
  Config a, b;
  b.slots = 7;
  EXPECT_FALSE(slots->same(a, b));
  slots->copy(b, a);
  EXPECT_TRUE(slots->same(a, b));
  EXPECT_EQ(b.slots, 16u);
}

}  // namespace
}  // namespace llmd::daemon
