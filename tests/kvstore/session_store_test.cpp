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

// Schema 2: where each message's tokens end, and the session's window, follow turns and window
// moves; a move and its turn commit together.
TEST_F(SessionStoreTest, TokenEndsAndTheWindowFollowTurnsAndMoves) {
  auto store = open();
  auto rec = session("s", 1);
  rec.system_prompt = "sys";
  rec.overflow = "drop_oldest";
  ASSERT_TRUE(store->create(rec, std::vector<MessageRecord>{{"system", "sys", 1}}, {}));
  auto got = store->get("s");
  EXPECT_EQ(got->overflow, "drop_oldest");
  EXPECT_EQ(got->window_first_message, 0);
  EXPECT_EQ(got->dropped_tokens, 0u);
  EXPECT_EQ(store->messages("s")->at(0).token_end, std::nullopt);  // before the first turn: unknown
  // Turn 1: the system prompt's end becomes known; the user's end is given, the assistant's is
  // the sequence's end.
  std::vector<MessageRecord> t1 = {{"user", "u1", 2}, {"assistant", "a1", 3}};
  t1[0].token_end = 6;
  WindowChange head;
  head.token_ends[0] = 2;
  ASSERT_TRUE(store->append_turn("s", t1, std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}, 0, 4, head));
  std::vector<MessageRecord> t2 = {{"user", "u2", 5}, {"assistant", "a2", 6}};
  t2[0].token_end = 11;
  ASSERT_TRUE(store->append_turn("s", t2, std::vector<int32_t>{9, 10, 11, 12}, 8, 7));
  auto msgs = store->messages("s");
  ASSERT_EQ(msgs->size(), 5u);
  const std::vector<std::optional<std::uint32_t>> ends = {2, 6, 8, 11, 12};
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(msgs->at(i).token_end, ends[i]) << i;
    EXPECT_EQ(msgs->at(i).seq, static_cast<std::int64_t>(i));
  }
  // A window move (turn 1 dropped) with turn 3, in one transaction: the sequence is the system
  // prompt's tokens + turn 2's, then turn 3's.
  WindowChange move;
  move.tokens = std::vector<int32_t>{1, 2, 9, 10, 11, 12};
  move.first_message = 3;
  move.dropped_tokens = 6;
  move.token_ends[3] = 5;
  move.token_ends[4] = 6;
  std::vector<MessageRecord> t3 = {{"user", "u3", 8}, {"assistant", "a3", 9}};
  t3[0].token_end = 8;
  // An offset beyond the sequence is refused, and nothing changes.
  auto bad = move;
  bad.token_ends[4] = 99;
  EXPECT_EQ(store->append_turn("s", t3, std::vector<int32_t>{13, 14, 15}, 12, 10, bad).error().code(),
            Errc::invalid_argument);
  EXPECT_EQ(store->tokens("s")->size(), 12u);
  EXPECT_EQ(store->messages("s")->size(), 5u);
  ASSERT_TRUE(store->append_turn("s", t3, std::vector<int32_t>{13, 14, 15}, 12, 10, move));
  EXPECT_EQ(*store->tokens("s"), (std::vector<int32_t>{1, 2, 9, 10, 11, 12, 13, 14, 15}));
  got = store->get("s");
  EXPECT_EQ(got->window_first_message, 3);
  EXPECT_EQ(got->dropped_tokens, 6u);
  EXPECT_EQ(got->n_messages, 7u);  // the transcript stays whole
  msgs = store->messages("s");
  const std::vector<std::optional<std::uint32_t>> moved = {2, std::nullopt, std::nullopt, 5, 6, 8, 9};
  for (std::size_t i = 0; i < 7; ++i) EXPECT_EQ(msgs->at(i).token_end, moved[i]) << i;
  // Re-derived tokens (a model change) know no offsets unless given.
  ASSERT_TRUE(store->replace_tokens("s", std::vector<int32_t>{1, 2, 3}, "model-b"));
  const auto cleared = store->messages("s");
  for (const auto& m : *cleared) EXPECT_EQ(m.token_end, std::nullopt);
  ASSERT_TRUE(store->replace_tokens("s", std::vector<int32_t>{1, 2, 3}, "model-b", {{0, 1}, {6, 3}}));
  EXPECT_EQ(store->messages("s")->at(0).token_end, 1u);
  EXPECT_EQ(store->messages("s")->at(6).token_end, 3u);
  EXPECT_EQ(store->get("s")->window_first_message, 3);  // the window is kept
}

// A schema-1 file (what llmd wrote before schema 2) opens, is migrated in place, and works.
TEST_F(SessionStoreTest, SchemaOneFileIsMigratedInPlaceAndWorks) {
  {
    auto db = Db::open(path_);
    ASSERT_TRUE(db);
    ASSERT_TRUE((*db)->exec(R"sql(
CREATE TABLE sessions(id TEXT PRIMARY KEY, uid INTEGER NOT NULL, app TEXT NOT NULL DEFAULT '', system_prompt TEXT,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, model_id TEXT NOT NULL, tokens BLOB NOT NULL);
CREATE INDEX sessions_by_uid ON sessions(uid);
CREATE TABLE messages(session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
  role TEXT NOT NULL, content TEXT NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY(session_id, seq));
INSERT INTO sessions VALUES('old', 1000, 'app', 'sys', 1, 2, 'model-a', x'0100000002000000');
INSERT INTO messages VALUES('old', 0, 'system', 'sys', 1);
INSERT INTO messages VALUES('old', 1, 'user', 'hi', 2);
INSERT INTO messages VALUES('old', 2, 'assistant', 'hello', 2);
PRAGMA user_version = 1;
)sql"));
  }
  {
    auto store = open();
    ASSERT_TRUE(store);
    auto got = store->get("old");
    ASSERT_TRUE(got) << got.error().to_string();
    EXPECT_EQ(got->system_prompt, "sys");
    EXPECT_EQ(got->n_messages, 3u);
    EXPECT_EQ(got->overflow, std::nullopt);
    EXPECT_EQ(got->window_first_message, 0);
    EXPECT_EQ(got->dropped_tokens, 0u);
    EXPECT_EQ(*store->tokens("old"), (std::vector<int32_t>{1, 2}));
    const auto old = store->messages("old");
    for (const auto& m : *old) EXPECT_EQ(m.token_end, std::nullopt);
    const std::vector<MessageRecord> turn = {{"user", "again", 3}, {"assistant", "yes", 4}};
    ASSERT_TRUE(store->append_turn("old", turn, std::vector<int32_t>{3, 4}, 2, 5));
    EXPECT_EQ(store->messages("old")->back().token_end, 4u);
    auto rec = session("new", 1);
    rec.overflow = "error";
    ASSERT_TRUE(store->create(rec, {}, {}));
  }
  auto db = Db::open(path_);
  ASSERT_TRUE(db);
  auto v = (*db)->prepare("PRAGMA user_version");
  ASSERT_TRUE(v);
  ASSERT_TRUE(*v->step());
  EXPECT_EQ(v->column_int(0), 4);
  db->reset();
  EXPECT_EQ(open()->get("new")->overflow, "error");  // and it opens again as schema 4
  EXPECT_EQ(open()->get("old")->kv_lineage, 0u);      // schema 3's column: what a prefill gives
  EXPECT_EQ(open()->get("old")->tools, std::nullopt); // schema 4's: no tools
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

namespace llmd::kvstore {
namespace {

// Fork: the copy is a whole session of its own, made in one transaction; the source is untouched
// and deleting it leaves the copy whole.
// A session's tools change only with a turn (WindowChange::tools, with the re-rendered tokens),
// "" clears them, a turn that names none keeps them, and a fork copies them.
TEST_F(SessionStoreTest, ToolsChangeWithATurnAndAreForked) {
  auto store = open();
  ASSERT_TRUE(store->create(session("s", 1000), {}, {}));
  EXPECT_EQ(store->get("s")->tools, std::nullopt);
  const std::string tools = R"([{"function":{"name":"f"},"type":"function"}])";
  WindowChange set;
  set.tools = tools;
  std::vector<MessageRecord> t1 = {{"user", "hi", 2000}, {"assistant", "{}", 2000}};
  ASSERT_TRUE(store->append_turn("s", t1, std::vector<int32_t>{1, 2, 3}, 0, 2000, set));
  EXPECT_EQ(store->get("s")->tools, tools);
  std::vector<MessageRecord> t2 = {{"tool", "42", 3000}, {"assistant", "ok", 3000}};
  ASSERT_TRUE(store->append_turn("s", t2, std::vector<int32_t>{4, 5}, 3, 3000));
  EXPECT_EQ(store->get("s")->tools, tools);
  EXPECT_EQ(store->messages("s")->at(2).role, "tool");
  SessionRecord copy;
  copy.id = "copy";
  copy.uid = 1000;
  ASSERT_TRUE(store->fork("s", copy));
  EXPECT_EQ(store->get("copy")->tools, tools);
  WindowChange clear;
  clear.tools = "";
  ASSERT_TRUE(store->append_turn("s", t1, std::vector<int32_t>{6}, 5, 4000, clear));
  EXPECT_EQ(store->get("s")->tools, std::nullopt);
  EXPECT_EQ(store->get("copy")->tools, tools);
}

TEST_F(SessionStoreTest, ForkCopiesEverythingAndOutlivesTheSource) {
  auto store = open();
  auto rec = session("src", 1000);
  rec.system_prompt = "Be brief.";
  rec.overflow = "error";
  ASSERT_TRUE(store->create(rec, std::vector<MessageRecord>{{"system", "Be brief.", 1000}}, std::vector<int32_t>{}));
  std::vector<MessageRecord> t1 = {{"user", "hi", 2000}, {"assistant", "hello", 2000}};
  t1[0].token_end = 4;
  WindowChange shifted;  // a sliding move's new KV lineage commits with the turn; a fork keeps it
  shifted.kv_lineage = 0xfeedfacecafebeefull;
  ASSERT_TRUE(store->append_turn("src", t1, std::vector<int32_t>{1, 2, 3, 4, 5, 6}, 0, 2000, shifted));
  EXPECT_EQ(store->get("src")->kv_lineage, 0xfeedfacecafebeefull);
  SessionRecord copy;
  copy.id = "copy";
  copy.uid = 1001;
  copy.created_ms = copy.updated_ms = 3000;
  auto forked = store->fork("src", copy);
  ASSERT_TRUE(forked) << forked.error().to_string();
  EXPECT_EQ(forked->uid, 1001u);
  EXPECT_EQ(forked->app, "test-app");
  EXPECT_EQ(forked->system_prompt, "Be brief.");
  EXPECT_EQ(forked->model_id, "model-a");
  EXPECT_EQ(forked->overflow, "error");
  EXPECT_EQ(forked->kv_lineage, 0xfeedfacecafebeefull);
  EXPECT_EQ(forked->created_ms, 3000);
  EXPECT_EQ(forked->n_messages, 3u);
  EXPECT_EQ(*store->tokens("copy"), *store->tokens("src"));
  const auto a = *store->messages("src");
  const auto b = *store->messages("copy");
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].role, b[i].role);
    EXPECT_EQ(a[i].content, b[i].content);
    EXPECT_EQ(a[i].created_ms, b[i].created_ms);
    EXPECT_EQ(a[i].token_end, b[i].token_end) << i;
  }
  // Each goes its own way.
  ASSERT_TRUE(store->append_turn("copy", t1, std::vector<int32_t>{7}, 6, 4000));
  EXPECT_EQ(store->get("src")->n_messages, 3u);
  ASSERT_TRUE(store->remove("src"));
  EXPECT_EQ(store->get("copy")->n_messages, 5u);
  EXPECT_EQ(store->tokens("copy")->size(), 7u);
  // No source, or an id that exists: nothing is made.
  EXPECT_EQ(store->fork("src", copy).error().code(), Errc::not_found);
  copy.id = "copy";
  EXPECT_EQ(store->fork("copy", copy).error().code(), Errc::invalid_argument);
  EXPECT_EQ(store->list()->size(), 1u);
}

// Rewind: messages and tokens are cut back together; offsets past the new end are forgotten; a
// window that began among the dropped messages becomes every message.
TEST_F(SessionStoreTest, RewindCutsMessagesAndTokensTogether) {
  auto store = open();
  ASSERT_TRUE(store->create(session("s", 1000), std::vector<MessageRecord>{{"system", "sys", 1000}},
                            std::vector<int32_t>{}));
  ASSERT_TRUE(store->append_turn("s", std::vector<MessageRecord>{{"user", "a", 1}, {"assistant", "b", 1}},
                                 std::vector<int32_t>{1, 2, 3, 4}, 0, 2000));
  ASSERT_TRUE(store->append_turn("s", std::vector<MessageRecord>{{"user", "c", 1}, {"assistant", "d", 1}},
                                 std::vector<int32_t>{5, 6, 7}, 4, 3000));
  auto cut = store->rewind("s", 3, 4, 5000);
  ASSERT_TRUE(cut) << cut.error().to_string();
  EXPECT_EQ(cut->n_messages, 3u);
  EXPECT_EQ(cut->n_tokens, 4u);
  EXPECT_EQ(cut->updated_ms, 5000);
  EXPECT_EQ(*store->tokens("s"), (std::vector<int32_t>{1, 2, 3, 4}));
  const auto msgs = *store->messages("s");
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(msgs[2].content, "b");
  EXPECT_EQ(msgs[2].token_end, 4u);  // the answer's end is where the tokens now end
  // A turn continues from the cut.
  ASSERT_TRUE(store->append_turn("s", std::vector<MessageRecord>{{"user", "e", 1}, {"assistant", "f", 1}},
                                 std::vector<int32_t>{8}, 4, 6000));
  EXPECT_EQ(store->messages("s")->back().content, "f");
  // Asking to keep more than there is changes nothing.
  EXPECT_EQ(store->rewind("s", 9, 0, 7000).error().code(), Errc::invalid_argument);
  EXPECT_EQ(store->rewind("s", 1, 99, 7000).error().code(), Errc::invalid_argument);
  EXPECT_EQ(store->get("s")->n_messages, 5u);
  // Back to the system prompt alone: no tokens, no offsets.
  cut = store->rewind("s", 1, 0, 8000);
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->n_tokens, 0u);
  EXPECT_EQ(store->messages("s")->at(0).token_end, std::nullopt);
  EXPECT_EQ(store->rewind("nope", 0, 0, 1).error().code(), Errc::not_found);
}

TEST_F(SessionStoreTest, RewindBeforeTheWindowResetsIt) {
  auto store = open();
  ASSERT_TRUE(store->create(session("s", 1000), std::vector<MessageRecord>{{"system", "sys", 1000}},
                            std::vector<int32_t>{}));
  ASSERT_TRUE(store->append_turn("s", std::vector<MessageRecord>{{"user", "a", 1}, {"assistant", "b", 1}},
                                 std::vector<int32_t>{1, 2, 3, 4}, 0, 2000));
  WindowChange move;
  move.tokens = std::vector<int32_t>{1, 2};
  move.first_message = 3;
  move.dropped_tokens = 2;
  ASSERT_TRUE(store->append_turn("s", std::vector<MessageRecord>{{"user", "c", 1}, {"assistant", "d", 1}},
                                 std::vector<int32_t>{5, 6}, 4, 3000, move));
  EXPECT_EQ(store->get("s")->window_first_message, 3);
  auto cut = store->rewind("s", 3, 0, 4000);
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->window_first_message, 0);
  EXPECT_EQ(cut->dropped_tokens, 2u);
}

}  // namespace
}  // namespace llmd::kvstore
