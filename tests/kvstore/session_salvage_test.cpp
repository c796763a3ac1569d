// A damaged session database: real damage to real SQLite files (overwritten pages, truncation, a
// header that is not SQLite's, a blob rewritten with the sqlite3 CLI), then
// SessionStore::open_or_salvage. What is salvaged must be exactly what was written; what is not
// must be reported; the damaged file must be kept byte for byte.
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "kvstore/session_store.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

namespace fs = std::filesystem;

struct Expected {
  SessionRecord rec;
  std::vector<MessageRecord> messages;
  std::vector<std::int32_t> tokens;
};

std::string filler(std::size_t n, int seed) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<char>('a' + (i * 7 + static_cast<std::size_t>(seed)) % 26);
  return s;
}

class SalvageTest : public ::testing::Test {
 protected:
  std::string dir_ = test::scratch_dir();
  std::string path_ = dir_ + "/sessions.db";
  std::map<std::string, Expected> expected_;

  // n sessions "s000"... owned by uids 1000-1002, each with a system prompt and `turns` turns;
  // sessions whose index is in big_tokens get 3000 tokens (several overflow pages).
  void populate(int n, int turns, std::size_t text_bytes, const std::set<int>& big_tokens = {}) {
    auto store = SessionStore::open(path_);
    ASSERT_TRUE(store) << store.error().to_string();
    for (int i = 0; i < n; ++i) {
      char id[16];
      std::snprintf(id, sizeof id, "s%03d", i);
      Expected e;
      e.rec.id = id;
      e.rec.uid = 1000 + static_cast<std::uint32_t>(i % 3);
      e.rec.app = "app" + std::to_string(i);
      e.rec.system_prompt = "prompt of " + e.rec.id + " " + filler(text_bytes, i);
      e.rec.created_ms = e.rec.updated_ms = 1000 + i;
      e.rec.model_id = "model-a";
      // Schema 2's columns, so that their salvage is checked too.
      if (i % 2) e.rec.overflow = i % 4 == 1 ? "drop_oldest" : "error";
      e.rec.window_first_message = i % 3;
      e.rec.dropped_tokens = static_cast<std::uint64_t>(i) * 10;
      e.messages.push_back({"system", *e.rec.system_prompt, 1000 + i});
      ASSERT_TRUE((*store)->create(e.rec, e.messages, {}));
      for (int t = 0; t < turns; ++t) {
        std::vector<MessageRecord> turn = {{"user", "question " + std::to_string(t) + " " + filler(text_bytes, t), 2000 + t},
                                           {"assistant", "answer " + std::to_string(t) + " " + filler(text_bytes, t + i), 2001 + t}};
        std::vector<std::int32_t> add(big_tokens.count(i) ? 3000 / turns : 5);
        turn[0].token_end = static_cast<std::uint32_t>(e.tokens.size() + 2);
        turn[1].token_end = static_cast<std::uint32_t>(e.tokens.size() + add.size());
        for (std::size_t k = 0; k < add.size(); ++k) add[k] = static_cast<std::int32_t>((i * 31 + t * 7 + k) % 500);
        ASSERT_TRUE((*store)->append_turn(e.rec.id, turn, add, static_cast<std::uint32_t>(e.tokens.size()), 3000 + t));
        e.messages.insert(e.messages.end(), turn.begin(), turn.end());
        e.tokens.insert(e.tokens.end(), add.begin(), add.end());
        e.rec.updated_ms = 3000 + t;
      }
      expected_[e.rec.id] = e;
    }
  }

  // Pages (1-based) of a table or index, by page type ("leaf", "internal", "overflow").
  std::vector<std::int64_t> pages(const std::string& name, const std::string& type) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    std::vector<std::int64_t> out;
    EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = ? ORDER BY pageno", -1,
                                 &st, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_bind_text(st, 1, name.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, type.c_str(), -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) out.push_back(sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }

  void overwrite_page(std::int64_t pageno) {
    const int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::string garbage(4096, '\xA5');  // SQLite's default page size
    ASSERT_EQ(::pwrite(fd, garbage.data(), garbage.size(), (pageno - 1) * 4096), 4096);
    ::close(fd);
  }

  // Every salvaged session is exactly as written, except what the report says it lost; every
  // session and message written is either salvaged or reported lost.
  void expect_everything_accounted_for(const SalvageReport& r, SessionStore& store, bool every_loss_known = true) {
    auto list = store.list();
    ASSERT_TRUE(list) << list.error().to_string();
    EXPECT_EQ(r.sessions_salvaged, list->size());
    std::size_t messages = 0, written = 0;
    std::set<std::string> salvaged;
    for (const auto& got : *list) {
      ASSERT_TRUE(expected_.count(got.id)) << got.id;
      salvaged.insert(got.id);
      const Expected& e = expected_[got.id];
      EXPECT_EQ(got.uid, e.rec.uid);
      EXPECT_EQ(got.app, e.rec.app);
      EXPECT_EQ(got.system_prompt, e.rec.system_prompt);
      EXPECT_EQ(got.created_ms, e.rec.created_ms);
      EXPECT_EQ(got.updated_ms, e.rec.updated_ms);
      const bool tokens_lost = std::count(r.tokens_lost.begin(), r.tokens_lost.end(), got.id) > 0;
      if (tokens_lost) {
        EXPECT_EQ(got.model_id, "");
        EXPECT_TRUE(store.tokens(got.id)->empty());
      } else {
        EXPECT_EQ(got.model_id, e.rec.model_id);
        EXPECT_EQ(*store.tokens(got.id), e.tokens) << got.id;
        EXPECT_EQ(got.overflow, e.rec.overflow) << got.id;
        EXPECT_EQ(got.window_first_message, e.rec.window_first_message) << got.id;
        EXPECT_EQ(got.dropped_tokens, e.rec.dropped_tokens) << got.id;
      }
      auto msgs = store.messages(got.id);
      ASSERT_TRUE(msgs);
      messages += msgs->size();
      const bool damaged = std::any_of(r.sessions_damaged.begin(), r.sessions_damaged.end(),
                                       [&](const std::string& d) { return d.rfind(got.id + " ", 0) == 0; });
      if (!damaged) {
        ASSERT_EQ(msgs->size(), e.messages.size()) << got.id;
      } else {
        EXPECT_LT(msgs->size(), e.messages.size()) << got.id;
      }
      // Whatever is there is a message written to this session, in order.
      std::size_t at = 0;
      for (const auto& m : *msgs) {
        while (at < e.messages.size() && !(e.messages[at].content == m.content && e.messages[at].role == m.role &&
                                           e.messages[at].created_ms == m.created_ms)) {
          ++at;
        }
        EXPECT_LT(at, e.messages.size()) << got.id << ": a message that was never written: " << m.content;
        // Offsets into salvaged tokens are kept; into lost ones they would describe nothing.
        if (at < e.messages.size()) {
          EXPECT_EQ(m.token_end, tokens_lost ? std::nullopt : e.messages[at].token_end) << got.id << " " << m.content;
        }
      }
    }
    EXPECT_EQ(r.messages_salvaged, messages);
    for (const auto& [id, e] : expected_) {
      written += e.messages.size();
      if (salvaged.count(id) || !every_loss_known) continue;
      EXPECT_TRUE(std::count(r.sessions_lost.begin(), r.sessions_lost.end(), id)) << id << " is gone, unreported";
    }
    if (every_loss_known) {
      EXPECT_EQ(r.messages_salvaged + r.messages_lost, written);
    }
  }

  // The kept-aside copy is byte for byte the damaged file.
  void expect_kept_aside(const SalvageReport& r, const std::string& damaged_bytes) {
    ASSERT_FALSE(r.kept_aside.empty());
    EXPECT_EQ(r.kept_aside[0].rfind(path_ + ".damaged-", 0), 0u) << r.kept_aside[0];
    EXPECT_EQ(test::read_file(r.kept_aside[0]), damaged_bytes);
  }

  std::unique_ptr<SessionStore> salvage(SalvageReport& r) {
    auto s = SessionStore::open_or_salvage(path_, r);
    EXPECT_TRUE(s) << s.error().to_string();
    return s ? std::move(*s) : nullptr;
  }

  // The new database is sound: opening it again finds nothing to salvage.
  void expect_sound() {
    SalvageReport again;
    auto s = SessionStore::open_or_salvage(path_, again);
    ASSERT_TRUE(s) << s.error().to_string();
    EXPECT_EQ(again.problem, "");
    EXPECT_TRUE(again.kept_aside.empty());
  }
};

TEST_F(SalvageTest, ASoundDatabaseOpensAsItIs) {
  populate(5, 1, 50);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_EQ(r.problem, "");
  EXPECT_TRUE(r.kept_aside.empty());
  EXPECT_EQ(store->list()->size(), 5u);
  for (const auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().filename().string().find("damaged"), std::string::npos);
}

TEST_F(SalvageTest, AnOverwrittenSessionsPageLosesOnlyTheSessionsOnIt) {
  populate(60, 1, 600);
  const auto leaves = pages("sessions", "leaf");
  ASSERT_GE(leaves.size(), 4u);
  overwrite_page(leaves[leaves.size() / 2]);
  const std::string damaged = test::read_file(path_);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_NE(r.problem, "");
  EXPECT_FALSE(r.nothing_readable);
  expect_kept_aside(r, damaged);
  EXPECT_GT(r.sessions_salvaged, 0u);
  EXPECT_LT(r.sessions_salvaged, 60u);
  EXPECT_EQ(r.sessions_salvaged + r.sessions_lost.size(), 60u);
  expect_everything_accounted_for(r, *store);
  store.reset();
  expect_sound();
}

TEST_F(SalvageTest, AnOverwrittenMessagesPageLosesOnlyTheMessagesOnIt) {
  populate(30, 3, 300);
  const auto leaves = pages("messages", "leaf");
  ASSERT_GE(leaves.size(), 4u);
  overwrite_page(leaves[1]);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_NE(r.problem, "");
  EXPECT_EQ(r.sessions_salvaged, 30u);
  EXPECT_GT(r.messages_lost, 0u);
  EXPECT_FALSE(r.sessions_damaged.empty());
  expect_everything_accounted_for(r, *store);
  store.reset();
  expect_sound();
}

TEST_F(SalvageTest, AnOverwrittenIndexPageLosesNothing) {
  populate(150, 2, 20);
  const auto leaves = pages("sqlite_autoindex_messages_1", "leaf");
  ASSERT_GE(leaves.size(), 2u);
  overwrite_page(leaves[0]);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_NE(r.problem, "");
  EXPECT_EQ(r.sessions_salvaged, 150u);
  EXPECT_EQ(r.messages_lost, 0u);
  EXPECT_TRUE(r.sessions_lost.empty());
  expect_everything_accounted_for(r, *store);
}

TEST_F(SalvageTest, UnreadableTokensAreDroppedForReDerivationTheRestKept) {
  populate(20, 1, 40, {3, 11, 17});
  const auto overflow = pages("sessions", "overflow");
  ASSERT_FALSE(overflow.empty());
  for (const auto p : overflow) overwrite_page(p);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_NE(r.problem, "");
  EXPECT_EQ(r.sessions_salvaged, 20u);
  std::vector<std::string> lost = r.tokens_lost;
  std::sort(lost.begin(), lost.end());
  EXPECT_EQ(lost, (std::vector<std::string>{"s003", "s011", "s017"}));
  expect_everything_accounted_for(r, *store);
}

TEST_F(SalvageTest, ATruncatedFileKeepsWhatIsBeforeTheCut) {
  populate(60, 1, 600);
  const auto size = fs::file_size(path_);
  fs::resize_file(path_, size / 2);
  const std::string damaged = test::read_file(path_);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_NE(r.problem, "");
  expect_kept_aside(r, damaged);
  EXPECT_GT(r.sessions_salvaged, 0u);
  EXPECT_LT(r.sessions_salvaged, 60u);
  expect_everything_accounted_for(r, *store, /*every_loss_known=*/false);
  store.reset();
  expect_sound();
}

TEST_F(SalvageTest, AFileThatIsNotADatabaseIsKeptAsideAndAnEmptyStoreStarts) {
  populate(5, 1, 50);
  const int fd = ::open(path_.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "this is not SQLite", 18, 0), 18);
  ::close(fd);
  const std::string damaged = test::read_file(path_);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_NE(r.problem, "");
  EXPECT_TRUE(r.nothing_readable);
  expect_kept_aside(r, damaged);
  EXPECT_TRUE(store->list()->empty());
  SessionRecord s;
  s.id = "new";
  s.model_id = "m";
  EXPECT_TRUE(store->create(s, {}, {}));
}

// Committed turns still in the WAL are part of the database: they are read through it, and the
// WAL is kept aside with the file.
TEST_F(SalvageTest, RowsStillInTheWalAreSalvagedAndTheWalKeptAside) {
  populate(60, 1, 600);  // closed: checkpointed into the file
  const auto leaves = pages("sessions", "leaf");
  ASSERT_GE(leaves.size(), 4u);
  const std::string copy = dir_ + "/copy";
  fs::create_directory(copy);
  {
    auto store = SessionStore::open(path_);
    ASSERT_TRUE(store);
    for (int i = 0; i < 3; ++i) {
      Expected e;
      e.rec.id = "wal" + std::to_string(i);
      e.rec.uid = 7;
      e.rec.model_id = "model-a";
      e.rec.created_ms = e.rec.updated_ms = 9000 + i;
      ASSERT_TRUE((*store)->create(e.rec, {}, std::vector<std::int32_t>{1, 2, 3}));
      e.tokens = {1, 2, 3};
      expected_[e.rec.id] = e;
    }
    // The files as a crash would leave them: the WAL not checkpointed.
    fs::copy_file(path_, copy + "/sessions.db");
    fs::copy_file(path_ + "-wal", copy + "/sessions.db-wal");
  }
  path_ = copy + "/sessions.db";
  overwrite_page(leaves[1]);
  const std::string wal = test::read_file(path_ + "-wal");
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_NE(r.problem, "");
  ASSERT_EQ(r.kept_aside.size(), 2u);
  EXPECT_EQ(test::read_file(r.kept_aside[1]), wal);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(store->get("wal" + std::to_string(i))) << i;
  expect_everything_accounted_for(r, *store);
}

// A blob rewritten with the sqlite3 CLI leaves a sound database: nothing is salvaged here (the
// next turn re-derives the tokens, see Service), and nothing is refused.
TEST_F(SalvageTest, ABlobRewrittenWithTheSqliteCliIsLeftToTheNextTurn) {
  populate(3, 1, 20);
  const std::string cmd = "sqlite3 " + path_ + " \"UPDATE sessions SET tokens = x'010203' WHERE id = 's001'\"";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_EQ(r.problem, "");
  EXPECT_EQ(store->tokens("s001").error().code(), Errc::corrupt);
  EXPECT_EQ(*store->tokens("s000"), expected_["s000"].tokens);
}

// A salvage that stopped after writing its result (the commit point) is installed by the next
// open; one that stopped before it is discarded and done again.
TEST_F(SalvageTest, AnInterruptedSalvageIsFinishedOrRedone) {
  populate(2, 1, 20);
  {
    // The result of an earlier salvage, complete: one session.
    auto staged = SessionStore::open(path_ + ".salvaged");
    ASSERT_TRUE(staged);
    SessionRecord s;
    s.id = "salvaged-one";
    s.model_id = "model-a";
    ASSERT_TRUE((*staged)->create(s, {}, {}));
  }
  test::write_file(path_ + ".salvage-tmp", "half written");
  test::write_file(path_ + "-wal", "the damaged file's WAL");
  SalvageReport r;
  auto store = salvage(r);
  ASSERT_TRUE(store);
  EXPECT_TRUE(r.finished_earlier);
  EXPECT_EQ(r.problem, "");
  ASSERT_EQ(store->list()->size(), 1u);
  EXPECT_TRUE(store->get("salvaged-one"));
  EXPECT_FALSE(fs::exists(path_ + ".salvaged"));
  EXPECT_FALSE(fs::exists(path_ + ".salvage-tmp"));
}

}  // namespace
}  // namespace llmd::kvstore
