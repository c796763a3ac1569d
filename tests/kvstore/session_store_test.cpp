// The SQLite session store: round trips, atomic turns, ownership queries, crash durability.
#include "kvstore/session_store.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

SessionRecord session(const std::string& id, uint32_t uid) {
  SessionRecord s;
  s.id = id;
  s.uid = uid;
  s.app = "test-app";
  s.created_ms = s.updated_ms = 1000;
  s.model_id = "model-a";
  return s;
}

class SessionStoreTest : public ::testing::Test {
 protected:
  std::string path_ = test::scratch_dir() + "/sessions.db";
  std::unique_ptr<SessionStore> open() {
    auto s = SessionStore::open(path_);
    EXPECT_TRUE(s) << s.error().to_string();
    return s ? std::move(*s) : nullptr;
  }
};

TEST_F(SessionStoreTest, CreateAndReadBack) {
  auto store = open();
  auto rec = session("s1", 1000);
  rec.system_prompt = "Be brief.";
  const std::vector<MessageRecord> msgs = {{"system", "Be brief.", 1000}};
  const std::vector<int32_t> toks = {1, 2, 3};
  ASSERT_TRUE(store->create(rec, msgs, toks));
  auto got = store->get("s1");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->uid, 1000u);
  EXPECT_EQ(got->app, "test-app");
  EXPECT_EQ(got->system_prompt, "Be brief.");
  EXPECT_EQ(got->n_tokens, 3u);
  EXPECT_EQ(got->n_messages, 1u);
  EXPECT_EQ(*store->tokens("s1"), toks);
  EXPECT_EQ(store->messages("s1")->at(0).content, "Be brief.");
  EXPECT_EQ(store->create(rec, msgs, toks).error().code(), Errc::invalid_argument);  // duplicate id
}

TEST_F(SessionStoreTest, ListFiltersByOwner) {
  auto store = open();
  ASSERT_TRUE(store->create(session("a", 1), {}, {}));
  ASSERT_TRUE(store->create(session("b", 2), {}, {}));
  ASSERT_TRUE(store->create(session("c", 1), {}, {}));
  EXPECT_EQ(store->list()->size(), 3u);
  auto mine = store->list(1u);
  ASSERT_EQ(mine->size(), 2u);
  EXPECT_EQ((*mine)[0].id, "a");
  EXPECT_EQ((*mine)[1].id, "c");
  EXPECT_TRUE(store->list(3u)->empty());
}

TEST_F(SessionStoreTest, TurnsAppendAtomicallyAndCheckTheBase) {
  auto store = open();
  ASSERT_TRUE(store->create(session("s", 1), {}, std::vector<int32_t>{1}));
  const std::vector<MessageRecord> turn = {{"user", "hi", 2000}, {"assistant", "hello", 2001}};
  ASSERT_TRUE(store->append_turn("s", turn, std::vector<int32_t>{5, 6, 7}, 1, 2002));
  EXPECT_EQ(*store->tokens("s"), (std::vector<int32_t>{1, 5, 6, 7}));
  EXPECT_EQ(store->get("s")->updated_ms, 2002);
  // A turn built on a stale token count is refused and changes nothing.
  auto stale = store->append_turn("s", turn, std::vector<int32_t>{9}, 1, 3000);
  EXPECT_EQ(stale.error().code(), Errc::invalid_argument);
  EXPECT_EQ(store->tokens("s")->size(), 4u);
  EXPECT_EQ(store->messages("s")->size(), 2u);
  EXPECT_EQ(store->append_turn("nope", turn, {}, 0, 1).error().code(), Errc::not_found);
}

TEST_F(SessionStoreTest, RemoveDeletesMessagesToo) {
  auto store = open();
  const std::vector<MessageRecord> m = {{"user", "x", 1}};
  ASSERT_TRUE(store->create(session("s", 1), m, {}));
  ASSERT_TRUE(store->remove("s"));
  EXPECT_EQ(store->get("s").error().code(), Errc::not_found);
  EXPECT_EQ(store->messages("s").error().code(), Errc::not_found);
  EXPECT_EQ(store->remove("s").error().code(), Errc::not_found);
}

TEST_F(SessionStoreTest, ReplaceTokensForAModelChange) {
  auto store = open();
  ASSERT_TRUE(store->create(session("s", 1), {}, std::vector<int32_t>{1, 2}));
  ASSERT_TRUE(store->replace_tokens("s", std::vector<int32_t>{7, 8, 9}, "model-b"));
  EXPECT_EQ(store->get("s")->model_id, "model-b");
  EXPECT_EQ(store->get("s")->n_tokens, 3u);
}

TEST_F(SessionStoreTest, SurvivesReopen) {
  {
    auto store = open();
    ASSERT_TRUE(store->create(session("s", 1), {}, std::vector<int32_t>{4, 5}));
  }
  auto again = open();
  EXPECT_EQ(*again->tokens("s"), (std::vector<int32_t>{4, 5}));
}

// A process killed with SIGKILL right after append_turn returned keeps the turn.
TEST_F(SessionStoreTest, CommittedTurnSurvivesKill9) {
  { ASSERT_TRUE(open()->create(session("s", 1), {}, std::vector<int32_t>{1})); }
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto store = SessionStore::open(path_);
    const std::vector<MessageRecord> turn = {{"user", "q", 1}, {"assistant", "a", 2}};
    if (!store || !(*store)->append_turn("s", turn, std::vector<int32_t>{2, 3}, 1, 3)) _exit(1);
    ::kill(::getpid(), SIGKILL);
    _exit(2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child did not get to the kill";
  auto store = open();
  EXPECT_EQ(*store->tokens("s"), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(store->messages("s")->size(), 2u);
}

TEST_F(SessionStoreTest, NotADatabaseIsRefused) {
  test::write_file(path_, std::string(4096, 'x'));
  auto s = SessionStore::open(path_);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), Errc::corrupt) << s.error().to_string();
}

TEST_F(SessionStoreTest, NewerSchemaIsRefused) {
  {
    auto db = Db::open(path_);
    ASSERT_TRUE(db);
    ASSERT_TRUE((*db)->exec("PRAGMA user_version = 99"));
  }
  auto s = SessionStore::open(path_);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), Errc::unsupported);
}

}  // namespace
}  // namespace llmd::kvstore
