// SQLite-backed session persistence (see session_store.h).
#include "kvstore/session_store.h"

#include <cstring>

namespace llmd::kvstore {
namespace {

constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS sessions(
  id            TEXT PRIMARY KEY,
  uid           INTEGER NOT NULL,
  app           TEXT NOT NULL DEFAULT '',
  system_prompt TEXT,
  created_ms    INTEGER NOT NULL,
  updated_ms    INTEGER NOT NULL,
  model_id      TEXT NOT NULL,
  tokens        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_uid ON sessions(uid);
CREATE TABLE IF NOT EXISTS messages(
  session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,
  role       TEXT NOT NULL,
  content    TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY(session_id, seq)
);
)sql";

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
    " WHERE m.session_id = s.id), 0) FROM sessions s";

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
  return r;
}

Error no_session(const std::string& id) { return Error(Errc::not_found, "no session " + id); }

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
  return db_->transaction([&]() -> Status {
    LLMD_TRY_STATUS(db_->exec(kSchema));
    return db_->exec("PRAGMA user_version = " + std::to_string(kSchemaVersion));
  });
}

Status SessionStore::create(const SessionRecord& s, std::span<const MessageRecord> messages,
                            std::span<const std::int32_t> tokens) {
  return db_->transaction([&]() -> Status {
    auto ins = db_->prepare(
        "INSERT INTO sessions(id, uid, app, system_prompt, created_ms, updated_ms, model_id, tokens)"
        " VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
    if (!ins) return ins.error();
    ins->bind(1, s.id).bind(2, static_cast<std::int64_t>(s.uid)).bind(3, s.app);
    if (s.system_prompt) ins->bind(4, *s.system_prompt);
    else ins->bind_null(4);
    ins->bind(5, s.created_ms).bind(6, s.updated_ms).bind(7, s.model_id).bind_blob(8, as_bytes(tokens));
    if (auto st = ins->run(); !st) {
      if (st.error().code() == Errc::invalid_argument) return Error(Errc::invalid_argument, "session " + s.id + " exists");
      return st;
    }
    auto msg = db_->prepare("INSERT INTO messages(session_id, seq, role, content, created_ms) VALUES(?, ?, ?, ?, ?)");
    if (!msg) return msg.error();
    std::int64_t seq = 0;
    for (const auto& m : messages) {
      msg->reset();
      msg->bind(1, s.id).bind(2, seq++).bind(3, m.role).bind(4, m.content).bind(5, m.created_ms);
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
  auto st = db_->prepare("SELECT role, content, created_ms FROM messages WHERE session_id = ? ORDER BY seq");
  if (!st) return st.error();
  st->bind(1, id);
  std::vector<MessageRecord> out;
  while (true) {
    auto row = st->step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back({st->column_text(0), st->column_text(1), st->column_int(2)});
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
  return db_->transaction([&]() -> Status {
    auto current = tokens(id);
    if (!current) return current.error();
    if (current->size() != expected_n_tokens) {
      return Error(Errc::invalid_argument, "session " + id + " changed underneath this turn (" +
                                               std::to_string(current->size()) + " tokens stored, " +
                                               std::to_string(expected_n_tokens) + " expected)");
    }
    current->insert(current->end(), new_tokens.begin(), new_tokens.end());
    auto upd = db_->prepare("UPDATE sessions SET tokens = ?, updated_ms = ? WHERE id = ?");
    if (!upd) return upd.error();
    upd->bind_blob(1, as_bytes(*current)).bind(2, now_ms).bind(3, id);
    LLMD_TRY_STATUS(upd->run());
    auto next = db_->prepare("SELECT coalesce(max(seq), -1) + 1 FROM messages WHERE session_id = ?");
    if (!next) return next.error();
    next->bind(1, id);
    auto row = next->step();
    if (!row) return row.error();
    std::int64_t seq = next->column_int(0);
    auto msg = db_->prepare("INSERT INTO messages(session_id, seq, role, content, created_ms) VALUES(?, ?, ?, ?, ?)");
    if (!msg) return msg.error();
    for (const auto& m : messages) {
      msg->reset();
      msg->bind(1, id).bind(2, seq++).bind(3, m.role).bind(4, m.content).bind(5, m.created_ms);
      LLMD_TRY_STATUS(msg->run());
    }
    return {};
  });
}

Status SessionStore::replace_tokens(const std::string& id, std::span<const std::int32_t> tokens,
                                    const std::string& model_id) {
  auto st = db_->prepare("UPDATE sessions SET tokens = ?, model_id = ? WHERE id = ?");
  if (!st) return st.error();
  st->bind_blob(1, as_bytes(tokens)).bind(2, model_id).bind(3, id);
  LLMD_TRY_STATUS(st->run());
  if (db_->changes() == 0) return no_session(id);
  return {};
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
        "INSERT INTO sessions(id, uid, app, system_prompt, created_ms, updated_ms, model_id, tokens)"
        " SELECT ?, ?, app, system_prompt, ?, ?, model_id, tokens FROM sessions WHERE id = ?");
    if (!ins) return ins.error();
    ins->bind(1, copy.id).bind(2, static_cast<std::int64_t>(copy.uid)).bind(3, copy.created_ms);
    ins->bind(4, copy.updated_ms).bind(5, source);
    if (auto st = ins->run(); !st) {
      if (st.error().code() == Errc::invalid_argument) return Error(Errc::invalid_argument, "session " + copy.id + " exists");
      return st;
    }
    if (db_->changes() == 0) return no_session(source);
    auto msgs = db_->prepare(
        "INSERT INTO messages(session_id, seq, role, content, created_ms)"
        " SELECT ?, seq, role, content, created_ms FROM messages WHERE session_id = ?");
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
    return upd->run();
  });
  if (!cut) return cut.error();
  return get(id);
}

}  // namespace llmd::kvstore
