// SQLite-backed session persistence (see session_store.h).
#include "kvstore/session_store.h"

#include <algorithm>
#include <cstring>

namespace llmd::kvstore {
namespace {

constexpr int kSchemaVersion = 4;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS sessions(
  id            TEXT PRIMARY KEY,
  uid           INTEGER NOT NULL,
  app           TEXT NOT NULL DEFAULT '',
  system_prompt TEXT,
  created_ms    INTEGER NOT NULL,
  updated_ms    INTEGER NOT NULL,
  model_id      TEXT NOT NULL,
  tokens        BLOB NOT NULL,
  overflow             TEXT,
  window_first_message INTEGER NOT NULL DEFAULT 0,
  dropped_tokens       INTEGER NOT NULL DEFAULT 0,
  kv_lineage           INTEGER NOT NULL DEFAULT 0,
  tools                TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_uid ON sessions(uid);
CREATE TABLE IF NOT EXISTS messages(
  session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,
  role       TEXT NOT NULL,
  content    TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  token_end  INTEGER,
  PRIMARY KEY(session_id, seq)
);
)sql";

// Columns schemas 2, 3 and 4 added, for the migration of an older file (ALTER TABLE ADD COLUMN:
// existing rows read the default).
struct AddedColumn {
  const char* table;
  const char* name;
  const char* decl;
};
constexpr AddedColumn kAddedInV2[] = {
    {"sessions", "overflow", "TEXT"},
    {"sessions", "window_first_message", "INTEGER NOT NULL DEFAULT 0"},
    {"sessions", "dropped_tokens", "INTEGER NOT NULL DEFAULT 0"},
    {"messages", "token_end", "INTEGER"},
    {"sessions", "kv_lineage", "INTEGER NOT NULL DEFAULT 0"},  // schema 3
    {"sessions", "tools", "TEXT"},                             // schema 4
};

// Tokens are stored as little-endian int32 (every supported host is little-endian).
std::span<const std::uint8_t> as_bytes(std::span<const std::int32_t> t) {
  return {reinterpret_cast<const std::uint8_t*>(t.data()), t.size() * sizeof(std::int32_t)};
}

Result<std::vector<std::int32_t>> from_bytes(std::span<const std::uint8_t> b) {
  if (b.size() % sizeof(std::int32_t) != 0) return Error(Errc::corrupt, "stored token sequence has a partial token");
  std::vector<std::int32_t> t(b.size() / sizeof(std::int32_t));
  if (!b.empty()) std::memcpy(t.data(), b.data(), b.size());
  return t;
}

constexpr const char* kSelectSession =
    "SELECT s.id, s.uid, s.app, s.system_prompt, s.created_ms, s.updated_ms, s.model_id, length(s.tokens) / 4,"
    " (SELECT count(*) FROM messages m WHERE m.session_id = s.id),"
    " length(s.tokens) + coalesce((SELECT sum(length(CAST(m.content AS BLOB))) FROM messages m"
    " WHERE m.session_id = s.id), 0), s.overflow, s.window_first_message, s.dropped_tokens,"
    " (SELECT count(*) FROM messages m WHERE m.session_id = s.id AND m.seq < s.window_first_message"
    " AND m.role != 'system'), s.kv_lineage, s.tools FROM sessions s";

SessionRecord read_session(const Statement& st) {
  SessionRecord r;
  r.id = st.column_text(0);
  r.uid = static_cast<std::uint32_t>(st.column_int(1));
  r.app = st.column_text(2);
  if (!st.column_is_null(3)) r.system_prompt = st.column_text(3);
  r.created_ms = st.column_int(4);
  r.updated_ms = st.column_int(5);
  r.model_id = st.column_text(6);
  r.n_tokens = static_cast<std::uint32_t>(st.column_int(7));
  r.n_messages = static_cast<std::uint32_t>(st.column_int(8));
  r.n_bytes = static_cast<std::uint64_t>(st.column_int(9));
  if (!st.column_is_null(10)) r.overflow = st.column_text(10);
  r.window_first_message = st.column_int(11);
  r.dropped_tokens = static_cast<std::uint64_t>(std::max<std::int64_t>(0, st.column_int(12)));
  r.n_dropped_messages = static_cast<std::uint32_t>(st.column_int(13));
  r.kv_lineage = static_cast<std::uint64_t>(st.column_int(14));
  if (!st.column_is_null(15)) r.tools = st.column_text(15);
  return r;
}

Error no_session(const std::string& id) { return Error(Errc::not_found, "no session " + id); }

void bind_token_end(Statement& st, int i, std::optional<std::uint32_t> end) {
  if (end) st.bind(i, static_cast<std::int64_t>(*end));
  else st.bind_null(i);
}

// Whether `table` has a column `name` (the migration adds only what is missing).
Result<bool> has_column(Db& db, const char* table, const char* name) {
  auto st = db.prepare(std::string("SELECT count(*) FROM pragma_table_info('") + table + "') WHERE name = ?");
  if (!st) return st.error();
  st->bind(1, std::string_view(name));
  auto row = st->step();
  if (!row) return row.error();
  return *row && st->column_int(0) > 0;
}

}  // namespace

Result<std::unique_ptr<SessionStore>> SessionStore::open(const std::string& path) {
  auto db = Db::open(path);
  if (!db) return db.error();
  std::unique_ptr<SessionStore> store(new SessionStore(std::move(*db)));
  LLMD_TRY_STATUS(store->migrate());
  return store;
}

Status SessionStore::migrate() {
  auto v = db_->prepare("PRAGMA user_version");
  if (!v) return v.error();
  auto row = v->step();
  if (!row) return row.error();
  const std::int64_t version = *row ? v->column_int(0) : 0;
  if (version > kSchemaVersion) {
    return Error(Errc::unsupported, "the session database has schema version " + std::to_string(version) +
                                        ", newer than this llmd understands (" + std::to_string(kSchemaVersion) +
                                        ")");
  }
  if (version == kSchemaVersion) return {};
  // A new file gets the whole schema; an older file gets the columns later schemas added. Both in one
  // transaction: a crash leaves the file as it was.
  return db_->transaction([&]() -> Status {
    LLMD_TRY_STATUS(db_->exec(kSchema));
    for (const auto& c : kAddedInV2) {
      auto has = has_column(*db_, c.table, c.name);
      if (!has) return has.error();
      if (!*has) {
        LLMD_TRY_STATUS(db_->exec(std::string("ALTER TABLE ") + c.table + " ADD COLUMN " + c.name + " " + c.decl));
      }
    }
    return db_->exec("PRAGMA user_version = " + std::to_string(kSchemaVersion));
  });
}

Status SessionStore::create(const SessionRecord& s, std::span<const MessageRecord> messages,
                            std::span<const std::int32_t> tokens) {
  return db_->transaction([&]() -> Status {
    auto ins = db_->prepare(
        "INSERT INTO sessions(id, uid, app, system_prompt, created_ms, updated_ms, model_id, tokens, overflow,"
        " window_first_message, dropped_tokens, kv_lineage, tools) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!ins) return ins.error();
    ins->bind(12, static_cast<std::int64_t>(s.kv_lineage));
    if (s.tools) ins->bind(13, *s.tools);
    else ins->bind_null(13);
    ins->bind(1, s.id).bind(2, static_cast<std::int64_t>(s.uid)).bind(3, s.app);
    if (s.system_prompt) ins->bind(4, *s.system_prompt);
    else ins->bind_null(4);
    ins->bind(5, s.created_ms).bind(6, s.updated_ms).bind(7, s.model_id).bind_blob(8, as_bytes(tokens));
    if (s.overflow) ins->bind(9, *s.overflow);
    else ins->bind_null(9);
    ins->bind(10, s.window_first_message).bind(11, static_cast<std::int64_t>(s.dropped_tokens));
    if (auto st = ins->run(); !st) {
      if (st.error().code() == Errc::invalid_argument) return Error(Errc::invalid_argument, "session " + s.id + " exists");
      return st;
    }
    auto msg = db_->prepare(
        "INSERT INTO messages(session_id, seq, role, content, created_ms, token_end) VALUES(?, ?, ?, ?, ?, ?)");
    if (!msg) return msg.error();
    std::int64_t seq = 0;
    for (const auto& m : messages) {
      if (m.token_end && *m.token_end > tokens.size()) {
        return Error(Errc::invalid_argument, "a message's token_end is beyond the session's tokens");
      }
      msg->reset();
      msg->bind(1, s.id).bind(2, seq++).bind(3, m.role).bind(4, m.content).bind(5, m.created_ms);
      bind_token_end(*msg, 6, m.token_end);
      LLMD_TRY_STATUS(msg->run());
    }
    return {};
  });
}

Result<std::vector<SessionRecord>> SessionStore::list(std::optional<std::uint32_t> uid) {
  auto st = db_->prepare(std::string(kSelectSession) + (uid ? " WHERE s.uid = ?" : "") + " ORDER BY s.created_ms, s.id");
  if (!st) return st.error();
  if (uid) st->bind(1, static_cast<std::int64_t>(*uid));
  std::vector<SessionRecord> out;
  while (true) {
    auto row = st->step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back(read_session(*st));
  }
  return out;
}

Result<SessionRecord> SessionStore::get(const std::string& id) {
  auto st = db_->prepare(std::string(kSelectSession) + " WHERE s.id = ?");
  if (!st) return st.error();
  st->bind(1, id);
  auto row = st->step();
  if (!row) return row.error();
  if (!*row) return no_session(id);
  return read_session(*st);
}

Result<std::vector<MessageRecord>> SessionStore::messages(const std::string& id) {
  auto exists = get(id);
  if (!exists) return exists.error();
  auto st = db_->prepare(
      "SELECT role, content, created_ms, token_end, seq FROM messages WHERE session_id = ? ORDER BY seq");
  if (!st) return st.error();
  st->bind(1, id);
  std::vector<MessageRecord> out;
  while (true) {
    auto row = st->step();
    if (!row) return row.error();
    if (!*row) break;
    MessageRecord m{st->column_text(0), st->column_text(1), st->column_int(2)};
    if (!st->column_is_null(3) && st->column_int(3) >= 0 && st->column_int(3) <= 0xFFFFFFFFll) {
      m.token_end = static_cast<std::uint32_t>(st->column_int(3));
    }
    m.seq = st->column_int(4);
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::vector<std::int32_t>> SessionStore::tokens(const std::string& id) {
  auto st = db_->prepare("SELECT tokens FROM sessions WHERE id = ?");
  if (!st) return st.error();
  st->bind(1, id);
  auto row = st->step();
  if (!row) return row.error();
  if (!*row) return no_session(id);
  return from_bytes(st->column_blob(0));
}

Status SessionStore::append_turn(const std::string& id, std::span<const MessageRecord> messages,
                                 std::span<const std::int32_t> new_tokens, std::uint32_t expected_n_tokens,
                                 std::int64_t now_ms) {
  return append_turn(id, messages, new_tokens, expected_n_tokens, now_ms, WindowChange{});
}

Status SessionStore::append_turn(const std::string& id, std::span<const MessageRecord> messages,
                                 std::span<const std::int32_t> new_tokens, std::uint32_t expected_n_tokens,
                                 std::int64_t now_ms, const WindowChange& window) {
  return db_->transaction([&]() -> Status {
    auto current = tokens(id);
    if (!current) return current.error();
    if (current->size() != expected_n_tokens) {
      return Error(Errc::invalid_argument, "session " + id + " changed underneath this turn (" +
                                               std::to_string(current->size()) + " tokens stored, " +
                                               std::to_string(expected_n_tokens) + " expected)");
    }
    if (window.tokens) *current = *window.tokens;
    current->insert(current->end(), new_tokens.begin(), new_tokens.end());
    const auto beyond = [&](std::optional<std::uint32_t> end) { return end && *end > current->size(); };
    auto upd = db_->prepare(
        "UPDATE sessions SET tokens = ?, updated_ms = ?, window_first_message = coalesce(?, window_first_message),"
        " dropped_tokens = dropped_tokens + ?, kv_lineage = coalesce(?, kv_lineage),"
        " tools = CASE WHEN ? THEN nullif(?, '') ELSE tools END WHERE id = ?");
    if (!upd) return upd.error();
    upd->bind_blob(1, as_bytes(*current)).bind(2, now_ms);
    if (window.first_message) upd->bind(3, *window.first_message);
    else upd->bind_null(3);
    upd->bind(4, static_cast<std::int64_t>(window.dropped_tokens)).bind(8, id);
    upd->bind(6, static_cast<std::int64_t>(window.tools ? 1 : 0)).bind(7, window.tools.value_or(""));
    if (window.kv_lineage) upd->bind(5, static_cast<std::int64_t>(*window.kv_lineage));
    else upd->bind_null(5);
    LLMD_TRY_STATUS(upd->run());
    if (window.tokens) {
      // Messages that left the window have no place in the new sequence.
      auto out = db_->prepare(
          "UPDATE messages SET token_end = NULL WHERE session_id = ? AND seq < ? AND role != 'system'");
      if (!out) return out.error();
      out->bind(1, id).bind(2, window.first_message.value_or(0));
      LLMD_TRY_STATUS(out->run());
    }
    auto set_end = db_->prepare("UPDATE messages SET token_end = ? WHERE session_id = ? AND seq = ?");
    if (!set_end) return set_end.error();
    for (const auto& [seq, end] : window.token_ends) {
      if (beyond(end)) return Error(Errc::invalid_argument, "a message's token_end is beyond the session's tokens");
      set_end->reset();
      bind_token_end(*set_end, 1, end);
      set_end->bind(2, id).bind(3, seq);
      LLMD_TRY_STATUS(set_end->run());
    }
    auto next = db_->prepare("SELECT coalesce(max(seq), -1) + 1 FROM messages WHERE session_id = ?");
    if (!next) return next.error();
    next->bind(1, id);
    auto row = next->step();
    if (!row) return row.error();
    std::int64_t seq = next->column_int(0);
    auto msg = db_->prepare(
        "INSERT INTO messages(session_id, seq, role, content, created_ms, token_end) VALUES(?, ?, ?, ?, ?, ?)");
    if (!msg) return msg.error();
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      std::optional<std::uint32_t> end = m.token_end;
      if (!end && i + 1 == messages.size()) end = static_cast<std::uint32_t>(current->size());
      if (beyond(end)) return Error(Errc::invalid_argument, "a message's token_end is beyond the session's tokens");
      msg->reset();
      msg->bind(1, id).bind(2, seq++).bind(3, m.role).bind(4, m.content).bind(5, m.created_ms);
      bind_token_end(*msg, 6, end);
      LLMD_TRY_STATUS(msg->run());
    }
    return {};
  });
}

Status SessionStore::replace_tokens(const std::string& id, std::span<const std::int32_t> tokens,
                                    const std::string& model_id) {
  return replace_tokens(id, tokens, model_id, {});
}

Status SessionStore::replace_tokens(const std::string& id, std::span<const std::int32_t> tokens,
                                    const std::string& model_id,
                                    const std::map<std::int64_t, std::optional<std::uint32_t>>& token_ends) {
  return db_->transaction([&]() -> Status {
    auto st = db_->prepare("UPDATE sessions SET tokens = ?, model_id = ? WHERE id = ?");
    if (!st) return st.error();
    st->bind_blob(1, as_bytes(tokens)).bind(2, model_id).bind(3, id);
    LLMD_TRY_STATUS(st->run());
    if (db_->changes() == 0) return no_session(id);
    auto clear = db_->prepare("UPDATE messages SET token_end = NULL WHERE session_id = ?");
    if (!clear) return clear.error();
    clear->bind(1, id);
    LLMD_TRY_STATUS(clear->run());
    auto set_end = db_->prepare("UPDATE messages SET token_end = ? WHERE session_id = ? AND seq = ?");
    if (!set_end) return set_end.error();
    for (const auto& [seq, end] : token_ends) {
      if (end && *end > tokens.size()) {
        return Error(Errc::invalid_argument, "a message's token_end is beyond the session's tokens");
      }
      set_end->reset();
      bind_token_end(*set_end, 1, end);
      set_end->bind(2, id).bind(3, seq);
      LLMD_TRY_STATUS(set_end->run());
    }
    return {};
  });
}

Status SessionStore::remove(const std::string& id) {
  auto st = db_->prepare("DELETE FROM sessions WHERE id = ?");
  if (!st) return st.error();
  st->bind(1, id);
  LLMD_TRY_STATUS(st->run());
  if (db_->changes() == 0) return no_session(id);
  return {};
}

Result<SessionRecord> SessionStore::fork(const std::string& source, const SessionRecord& copy) {
  const Status copied = db_->transaction([&]() -> Status {
    auto ins = db_->prepare(
        "INSERT INTO sessions(id, uid, app, system_prompt, created_ms, updated_ms, model_id, tokens, overflow,"
        " window_first_message, dropped_tokens, kv_lineage, tools)"
        " SELECT ?, ?, app, system_prompt, ?, ?, model_id, tokens, overflow, window_first_message, dropped_tokens,"
        " kv_lineage, tools"
        " FROM sessions WHERE id = ?");
    if (!ins) return ins.error();
    ins->bind(1, copy.id).bind(2, static_cast<std::int64_t>(copy.uid)).bind(3, copy.created_ms);
    ins->bind(4, copy.updated_ms).bind(5, source);
    if (auto st = ins->run(); !st) {
      if (st.error().code() == Errc::invalid_argument) return Error(Errc::invalid_argument, "session " + copy.id + " exists");
      return st;
    }
    if (db_->changes() == 0) return no_session(source);
    auto msgs = db_->prepare(
        "INSERT INTO messages(session_id, seq, role, content, created_ms, token_end)"
        " SELECT ?, seq, role, content, created_ms, token_end FROM messages WHERE session_id = ?");
    if (!msgs) return msgs.error();
    msgs->bind(1, copy.id).bind(2, source);
    return msgs->run();
  });
  if (!copied) return copied.error();
  return get(copy.id);
}

Result<SessionRecord> SessionStore::rewind(const std::string& id, std::uint32_t keep_messages,
                                           std::uint32_t keep_tokens, std::int64_t now_ms) {
  const Status cut = db_->transaction([&]() -> Status {
    auto rec = get(id);
    if (!rec) return rec.error();
    if (keep_messages > rec->n_messages || keep_tokens > rec->n_tokens) {
      return Error(Errc::invalid_argument, "session " + id + " holds " + std::to_string(rec->n_messages) +
                                               " messages and " + std::to_string(rec->n_tokens) +
                                               " tokens; cannot keep " + std::to_string(keep_messages) + " and " +
                                               std::to_string(keep_tokens));
    }
    // By position, not by seq value: a salvaged session may have gaps in its numbering.
    auto del = db_->prepare(
        "DELETE FROM messages WHERE session_id = ?1 AND seq >= (SELECT seq FROM messages WHERE session_id = ?1"
        " ORDER BY seq LIMIT 1 OFFSET ?2)");
    if (!del) return del.error();
    del->bind(1, id).bind(2, static_cast<std::int64_t>(keep_messages));
    LLMD_TRY_STATUS(del->run());
    auto upd = db_->prepare("UPDATE sessions SET tokens = substr(tokens, 1, ?), updated_ms = ? WHERE id = ?");
    if (!upd) return upd.error();
    upd->bind(1, static_cast<std::int64_t>(keep_tokens) * 4).bind(2, now_ms).bind(3, id);
    LLMD_TRY_STATUS(upd->run());
    // Offsets past the new end name tokens that are gone.
    auto ends = db_->prepare("UPDATE messages SET token_end = NULL WHERE session_id = ? AND token_end > ?");
    if (!ends) return ends.error();
    ends->bind(1, id).bind(2, static_cast<std::int64_t>(keep_tokens));
    LLMD_TRY_STATUS(ends->run());
    // A window that began among the dropped messages holds none of the kept ones: it becomes every
    // message again (the next turn renders them).
    auto window = db_->prepare(
        "UPDATE sessions SET window_first_message = 0 WHERE id = ?1 AND window_first_message >"
        " (SELECT coalesce(max(seq), -1) FROM messages WHERE session_id = ?1)");
    if (!window) return window.error();
    window->bind(1, id);
    return window->run();
  });
  if (!cut) return cut.error();
  return get(id);
}

}  // namespace llmd::kvstore
