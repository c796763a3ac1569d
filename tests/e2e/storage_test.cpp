// The durable store and the state directory against the real daemon: other users cannot read
// conversations whoever created the state directory; a damaged sessions.db or token sequence does
// not stop llmd or a session; a full disk is answered 507 before any text, and loses nothing that
// was acknowledged.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;

std::string new_session(const client::HttpClient& c) {
  auto r = call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "You tell stories."}});
  EXPECT_EQ(r.status, 201u) << r.raw;
  return r.body.value("id", "");
}

JsonReply say(const client::HttpClient& c, const std::string& id, const std::string& text, int max_tokens = 8) {
  return session_turn(c, id, text, max_tokens);
}

std::string octal(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// Every path at or under dir with a permission for others, or (below dir) for the group.
std::vector<std::string> not_private(const std::string& dir) {
  std::vector<std::string> out;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) == 0 && (st.st_mode & (S_IRWXO | S_IWGRP))) out.push_back(dir + " " + octal(st.st_mode));
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (::lstat(e.path().c_str(), &st) != 0 || S_ISLNK(st.st_mode)) continue;
    if (st.st_mode & (S_IRWXO | S_IRWXG)) out.push_back(e.path().string() + " " + octal(st.st_mode));
  }
  return out;
}

std::string sqlite(const std::string& db, const std::string& sql) {
  const auto r = run_program({"/usr/bin/sqlite3", db, sql});
  EXPECT_EQ(r.exit_code, 0) << sql << ": " << r.err;
  std::string out = r.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

bool log_has(const DaemonProcess& d, const std::string& needle) { return d.log().find(needle) != std::string::npos; }

// ---- Bug 3: other users can read conversations -------------------------------------------------

TEST(StateDir, OpenDirCreatedBeforehandKeepsSessionsPrivate) {
  const std::string dir = scratch_dir();
  const std::string state = dir + "/state";
  ASSERT_EQ(::mkdir(state.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(state.c_str(), 0755), 0);  // whatever the test's umask
  DaemonProcess d(dir);
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string id = new_session(c);
  const auto r = say(c, id, "The secret word is PLUMTREE4721.");
  ASSERT_EQ(r.status, 200u) << r.raw;
  // While llmd runs, the turn is in the WAL.
  ASSERT_TRUE(fs::exists(state + "/sessions.db-wal"));
  EXPECT_EQ(not_private(state), std::vector<std::string>{});
  struct stat st {};
  ASSERT_EQ(::stat(d.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u) << "the socket stays open to every user";

  // Another user cannot open what llmd keeps, let alone find the secret in it.
  const int rc = wait_child(spawn_as(kNobody, kNobody, [&] {
    for (const char* f : {"sessions.db-wal", "sessions.db", "sessions.db-shm"}) {
      const int fd = ::open((state + "/" + f).c_str(), O_RDONLY);
      if (fd >= 0) return 1;
      if (errno != EACCES) return 2;
    }
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "uid " << kNobody << " opened a file of the state directory";
  EXPECT_TRUE(log_has(d, "paths other users could read were made private")) << d.log();
}

TEST(StateDir, FilesLeftReadableAreMadePrivateAtStart) {
  const std::string dir = scratch_dir();
  const std::string state = dir + "/state";
  std::string id;
  {
    DaemonProcess d(dir);
    ASSERT_TRUE(d.start()) << d.log();
    id = new_session(d.client());
    ASSERT_EQ(say(d.client(), id, "Remember the number 1234.").status, 200u);
    d.kill9();  // the WAL stays
  }
  // As llmd left them before it set its umask (and as any umask 022 process would).
  ::chmod(state.c_str(), 0755);
  std::size_t opened = 0;
  for (const auto& e : fs::recursive_directory_iterator(state)) {
    ::chmod(e.path().c_str(), e.is_directory() ? 0755 : 0644);
    ++opened;
  }
  ASSERT_GE(opened, 2u);
  ASSERT_FALSE(not_private(state).empty());

  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_EQ(not_private(state), std::vector<std::string>{});
  EXPECT_TRUE(log_has(again, "paths other users could read were made private")) << again.log();
  EXPECT_EQ(say(again.client(), id, "What was the number?").status, 200u);
  EXPECT_EQ(not_private(state), std::vector<std::string>{});
}

// llmd's umask must not lock other users out of a socket directory llmd creates itself.
TEST(StateDir, SocketDirLlmdCreatesLetsEveryUserIn) {
  const std::string dir = scratch_dir();
  DaemonOptions o;
  o.args = {"--socket", dir + "/run/llmd/llmd.sock"};
  DaemonProcess d(dir, o);
  ASSERT_TRUE(d.start()) << d.log();
  struct stat st {};
  for (const std::string& p : {dir + "/run", dir + "/run/llmd"}) {
    ASSERT_EQ(::stat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_mode & 0777, 0755u) << p;
  }
  const int rc = wait_child(spawn_as(kNobody, kNobody, [&] {
    const int fd = connect_to(d.socket());
    if (fd < 0) return 1;
    ::close(fd);
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "uid " << kNobody << " cannot reach the socket";
}

// ---- Bug 6 for sessions.db ---------------------------------------------------------------------

// A damaged token sequence (as SQLite hands it back: damage SQLite cannot see) is re-derived from
// the session's messages on its next turn, as after a model change.
struct TokenDamage {
  const char* name;
  std::function<std::string(const std::string& id, const std::string& hex)> sql;  // hex: the tokens now
};

class DamagedTokens : public ::testing::TestWithParam<TokenDamage> {};

TEST_P(DamagedTokens, ReDerivedOnNextTurn) {
  const std::string dir = scratch_dir();
  std::string id;
  {
    DaemonProcess d(dir);
    ASSERT_TRUE(d.start()) << d.log();
    id = new_session(d.client());
    ASSERT_EQ(say(d.client(), id, "Tell me a story.").status, 200u);
    ASSERT_EQ(say(d.client(), id, "What happened next?").status, 200u);
    ASSERT_EQ(d.stop(), 0);
  }
  const std::string db = dir + "/state/sessions.db";
  const std::string hex = sqlite(db, "SELECT hex(tokens) FROM sessions WHERE id = '" + id + "'");
  ASSERT_GE(hex.size(), 80u);
  sqlite(db, GetParam().sql(id, hex));

  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  const auto r = say(again.client(), id, "How did it end?");
  EXPECT_EQ(r.status, 200u) << r.raw;
  EXPECT_TRUE(log_has(again, "its stored tokens are damaged")) << again.log();
  const auto s = call(again.client(), "GET", "/v1/sessions/" + id);
  EXPECT_EQ(s.body["messages"].size(), 7u) << s.raw;
  EXPECT_GT(s.body["n_tokens"].get<int>(), 0) << s.raw;
  EXPECT_LT(s.body["n_tokens"].get<int>(), 2048) << s.raw;
  EXPECT_EQ(say(again.client(), id, "And then?").status, 200u);
}

INSTANTIATE_TEST_SUITE_P(
    Tok, DamagedTokens,
    ::testing::Values(
        TokenDamage{"Partial",
                    [](const std::string& id, const std::string&) {
                      return "UPDATE sessions SET tokens = substr(tokens, 1, length(tokens) - 1) WHERE id = '" + id + "'";
                    }},
        TokenDamage{"OutOfVocab",
                    [](const std::string& id, const std::string& hex) {
                      // Token 3 becomes -16776923 (0xFF000125, little-endian).
                      return "UPDATE sessions SET tokens = x'" + hex.substr(0, 24) + "250100FF" + hex.substr(32) +
                             "' WHERE id = '" + id + "'";
                    }},
        TokenDamage{"TooLong",
                    [](const std::string& id, const std::string&) {
                      return "UPDATE sessions SET tokens = zeroblob(4 * 100000) WHERE id = '" + id + "'";
                    }}),
    [](const ::testing::TestParamInfo<TokenDamage>& p) { return std::string(p.param.name); });

TEST(DamagedDb, StartsWithWhatCanBeReadAndNamesWhatIsLost) {
  const std::string dir = scratch_dir();
  const std::string prompt(1500, 'p');
  std::vector<std::string> ids;
  {
    DaemonProcess d(dir);
    ASSERT_TRUE(d.start()) << d.log();
    for (int i = 0; i < 24; ++i) {
      auto r = call(d.client(), "POST", "/v1/sessions",
                    nlohmann::json{{"system_prompt", "Session " + std::to_string(i) + ". " + prompt}});
      ASSERT_EQ(r.status, 201u) << r.raw;
      ids.push_back(r.body["id"]);
    }
    ASSERT_EQ(d.stop(), 0);
  }
  const std::string db = dir + "/state/sessions.db";
  const std::string page =
      sqlite(db, "SELECT pageno FROM dbstat WHERE name = 'sessions' AND pagetype = 'leaf' ORDER BY pageno LIMIT 1 OFFSET 2");
  ASSERT_FALSE(page.empty());
  {
    const int fd = ::open(db.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::string garbage(4096, '\x5A');
    ASSERT_EQ(::pwrite(fd, garbage.data(), garbage.size(), (std::stol(page) - 1) * 4096), 4096);
    ::close(fd);
  }
  const std::string damaged = read_file(db);

  DaemonProcess again(dir);
  ASSERT_TRUE(again.start()) << again.log();
  EXPECT_TRUE(log_has(again, "is DAMAGED")) << again.log();
  EXPECT_TRUE(log_has(again, "LOST")) << again.log();
  // The damaged file is kept as it was.
  std::vector<std::string> aside;
  for (const auto& e : fs::directory_iterator(dir + "/state")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("sessions.db.damaged-", 0) == 0 && name.find("-wal") == std::string::npos) aside.push_back(e.path());
  }
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_EQ(read_file(aside[0]), damaged);

  const auto c = again.client();
  const auto list = call(c, "GET", "/v1/sessions");
  ASSERT_EQ(list.status, 200u);
  std::set<std::string> listed;
  for (const auto& s : list.body["data"]) listed.insert(s["id"].get<std::string>());
  EXPECT_GT(listed.size(), 0u);
  EXPECT_LT(listed.size(), ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto got = call(c, "GET", "/v1/sessions/" + ids[i]);
    if (listed.count(ids[i])) {
      ASSERT_EQ(got.status, 200u) << got.raw;
      EXPECT_EQ(got.body["system_prompt"], "Session " + std::to_string(i) + ". " + prompt);
    } else {
      EXPECT_EQ(got.status, 404u);
      EXPECT_TRUE(log_has(again, ids[i])) << ids[i] << " was lost without being named:\n" << again.log();
    }
  }
  const std::string survivor = *listed.begin();
  EXPECT_EQ(say(c, survivor, "Tell me a story.").status, 200u);
  EXPECT_EQ(call(c, "POST", "/v1/sessions", nlohmann::json::object()).status, 201u);
}

// ---- Bug 5 for the durable store: a full disk --------------------------------------------------

TEST(DiskReserve, OutOfRangeIsRefusedNamingTheKey) {
  expect_refused_naming_the_key({{{"--disk-reserve-mib", "2000000000"}, "disk-reserve-mib"},
                                 {{"--disk-reserve-mib", "lots"}, "disk-reserve-mib"}});
}

// The state directory is a tmpfs of 4 MiB, so the test can fill it.
class DiskFull : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: the state directory is a 4 MiB tmpfs the test mounts";
    dir_ = scratch_dir();
    state_ = dir_ + "/state";
    ASSERT_EQ(::mkdir(state_.c_str(), 0750), 0);
    if (::mount("tmpfs", state_.c_str(), "tmpfs", 0, "size=4m,mode=0750") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << ")";
    }
    mounted_ = true;
  }
  void TearDown() override {
    daemon_.reset();
    if (mounted_) ::umount2(state_.c_str(), MNT_DETACH);
  }
  void start(std::vector<std::string> args) {
    DaemonOptions o;
    o.args = std::move(args);
    // The KV chunk tier stays off the small disk (its own reserve is the chunk store's).
    o.args.insert(o.args.end(), {"--kv-disk-mib", "0"});
    daemon_ = std::make_unique<DaemonProcess>(dir_, o);
    ASSERT_TRUE(daemon_->start()) << daemon_->log();
  }
  std::uint64_t free_bytes() const {
    struct statvfs fs {};
    EXPECT_EQ(::statvfs(state_.c_str(), &fs), 0);
    return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  }
  // Fills the file system, then frees `leave` bytes of the filler.
  void fill(std::uint64_t leave) {
    const std::string filler = state_ + "/filler";
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    const std::string block(65536, 'f');
    off_t size = 0;
    while (true) {
      const ssize_t n = ::write(fd, block.data(), block.size());
      if (n <= 0) break;
      size += n;
    }
    ASSERT_EQ(::ftruncate(fd, size > static_cast<off_t>(leave) ? size - static_cast<off_t>(leave) : 0), 0);
    ::close(fd);
  }
  void free_space() { ASSERT_EQ(::unlink((state_ + "/filler").c_str()), 0); }
  void expect_no_space(const JsonReply& r) {
    EXPECT_EQ(r.status, 507u) << r.raw;
    EXPECT_EQ(r.body["error"]["code"], "insufficient_storage") << r.raw;
  }

  std::string dir_, state_;
  bool mounted_ = false;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(DiskFull, BelowReserveCreateAndTurnAnswer507BeforeText) {
  start({"--disk-reserve-mib", "1"});
  const auto c = daemon_->client();
  const std::string id = new_session(c);
  const auto first = say(c, id, "Tell me a story.");
  const auto second = say(c, id, "What happened next?");
  ASSERT_EQ(first.status, 200u);
  ASSERT_EQ(second.status, 200u);

  fill(512 << 10);
  ASSERT_LT(free_bytes(), 1u << 20);
  ASSERT_GT(free_bytes(), 0u);
  const auto create = call(c, "POST", "/v1/sessions", nlohmann::json::object());
  expect_no_space(create);
  EXPECT_EQ(create.body["error"]["param"], "disk-reserve-mib") << create.raw;
  EXPECT_NE(create.raw.find("free space"), std::string::npos) << create.raw;
  expect_no_space(say(c, id, "How did it end?"));
  auto body = greedy_body(8);
  body["content"] = "How did it end?";
  const Streamed s = stream(c, "/v1/sessions/" + id + "/messages", body);
  EXPECT_EQ(s.status, 507u);
  EXPECT_TRUE(s.events.empty());
  EXPECT_EQ(s.text, "");
  // One-off completions need no storage: they still run.
  auto once = greedy_body(4);
  once["prompt"] = "Once upon a time";
  EXPECT_EQ(call(c, "POST", "/v1/completions", once).status, 200u);

  free_space();
  const auto third = say(c, id, "How did it end?");
  ASSERT_EQ(third.status, 200u) << third.raw;
  auto check = [&](const client::HttpClient& cl) {
    const auto got = call(cl, "GET", "/v1/sessions/" + id);
    ASSERT_EQ(got.body["messages"].size(), 7u) << got.raw;
    EXPECT_EQ(got.body["messages"][2]["content"], first.body["message"]["content"]);
    EXPECT_EQ(got.body["messages"][4]["content"], second.body["message"]["content"]);
    EXPECT_EQ(got.body["messages"][6]["content"], third.body["message"]["content"]);
  };
  check(c);
  ASSERT_EQ(daemon_->stop(), 0);
  start({"--disk-reserve-mib", "1"});
  check(daemon_->client());
}

// With no reserve the disk really fills: SQLite's "database or disk is full" is storage full (507,
// insufficient_storage), not a quota (429), and the turn that could not be saved is not kept.
TEST_F(DiskFull, FullDiskIsStorageFullNotAQuota) {
  start({"--disk-reserve-mib", "0"});
  const auto c = daemon_->client();
  const std::string id = new_session(c);
  const auto first = say(c, id, "Tell me a story.");
  ASSERT_EQ(first.status, 200u);

  fill(0);
  // Every commit appends whole frames to the WAL (4 KiB pages and a header each): it needs new
  // pages of the file system.
  expect_no_space(say(c, id, "What happened next?"));
  auto body = greedy_body(8);
  body["content"] = "What happened next?";
  const Streamed s = stream(c, "/v1/sessions/" + id + "/messages", body);
  ASSERT_FALSE(s.events.empty());
  const auto& last = s.events.back();
  ASSERT_TRUE(last.contains("error")) << last.dump();
  EXPECT_EQ(last["error"]["code"], "insufficient_storage") << last.dump();
  expect_no_space(call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "You tell stories."}}));

  free_space();
  const auto got = call(c, "GET", "/v1/sessions/" + id);
  ASSERT_EQ(got.body["messages"].size(), 3u) << got.raw;
  EXPECT_EQ(got.body["messages"][2]["content"], first.body["message"]["content"]);
  EXPECT_EQ(say(c, id, "What happened next?").status, 200u);
}

}  // namespace
}  // namespace llmd::test
