// Opening the session store with a damage check, and salvaging a damaged one (see
// SessionStore::open_or_salvage in session_store.h).
//
// The damaged files are never written to: a read-only connection (no checkpoint on close) reads
// them row by row, they get a second name (a hard link, or a copy where links are not supported)
// before anything replaces them, and the salvaged rows go to a new file that replaces the damaged
// one in two renames:
//
//   sessions.db.salvage-tmp   being written (a leftover one is discarded at the next start)
//   sessions.db.salvaged      complete and synced: the commit point. From here on the damaged
//                             sessions.db-wal/-shm are removed and the file is renamed to
//                             sessions.db; a start that finds it finishes that first.
//
// Rows are found by every route SQLite still has to them, because damage cuts a table scan short:
// scans of each table in both directions, scans of each index (which also name rows the table can
// no longer give, so they are reported lost by id), and lookups of every rowid between the lowest
// and the highest one seen. Each row is then read by rowid on its own, the big columns apart from
// the small ones, so that an unreadable overflow page costs that column, not the row.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include "kvstore/session_store.h"

namespace llmd::kvstore {
namespace {

namespace fs = std::filesystem;

// Rowid lookups from 1 to the highest rowid seen are skipped when it is beyond this (a rowid
// table's rowids are dense here: sessions and messages are only ever appended or deleted).
constexpr std::int64_t kMaxProbeSpan = 4'000'000;
// Past the highest rowid seen (the end of the table may be what is unreadable), lookups go on
// until this many in a row find nothing.
constexpr std::int64_t kProbePastEnd = 4096;

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

Status sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(errno, "opening " + path);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return errno_error(err, "syncing " + path);
  return {};
}

std::string dir_of(const std::string& path) {
  const auto parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

Status sync_dir_of(const std::string& path) { return sync_file(dir_of(path)); }

Status remove_if_exists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error(errno, "removing " + path);
  return {};
}

Status copy_file(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) {
    (void)remove_if_exists(to);
    return errno_error(ec.value(), "copying " + from + " to " + to);
  }
  return sync_file(to);
}

// A second name for a damaged file: a hard link (no space needed, and the original name is only
// ever replaced, never written again), or a copy where the file system has no links.
Status keep_aside(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return {};
  const int err = errno;
  if (err == ENOSPC || err == EDQUOT) return errno_error(err, "linking " + from + " to " + to);
  return copy_file(from, to);
}

std::string utc_stamp() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

// The path's -wal/-shm/-journal companions, as SQLite names them.
std::vector<std::string> companions(const std::string& path) {
  return {path + "-wal", path + "-shm", path + "-journal"};
}

Status remove_with_companions(const std::string& path) {
  LLMD_TRY_STATUS(remove_if_exists(path));
  for (const auto& c : companions(path)) LLMD_TRY_STATUS(remove_if_exists(c));
  return {};
}

// `staged` (complete, synced) replaces `path`: the old -wal/-shm go first (SQLite would otherwise
// replay the damaged file's WAL into the new one), then the rename.
Status install(const std::string& staged, const std::string& path) {
  for (const auto& c : companions(path)) LLMD_TRY_STATUS(remove_if_exists(c));
  if (::rename(staged.c_str(), path.c_str()) != 0) return errno_error(errno, "renaming " + staged + " to " + path);
  return sync_dir_of(path);
}

// A read-only connection to the damaged file that never writes it (no checkpoint on close).
class Reader {
 public:
  ~Reader() {
    for (auto& [sql, st] : cache_) sqlite3_finalize(st);
    if (db_) sqlite3_close_v2(db_);
  }
  Status open(const std::string& path) {
    const int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return Error(Errc::corrupt, std::string("opening read-only: ") + sqlite3_errstr(rc));
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, 5000);
    sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    // Without it SQLite refuses a file shorter than its header says (truncated) as a whole;
    // with it, it reads the pages that are there. (Harmless here: the connection cannot write.)
    (void)sqlite3_exec(db_, "PRAGMA writable_schema = ON", nullptr, nullptr, nullptr);
    truncated_ = shorter_than_its_header(path);
    return {};
  }
  sqlite3* db() const { return db_; }
  // The file ends before the pages its header counts. SQLite reads a page past the end as zeros
  // (a short read is not an error to it), so a text whose last overflow page was cut off reads
  // with NUL bytes where its end was: such a text is taken as unreadable (see readable_text).
  bool truncated() const { return truncated_; }

  // Runs a query, calling row(stmt) per row, until it ends or fails: false if it failed (the rows
  // before the failure were delivered). A query that cannot even be prepared delivers nothing.
  // Statements are prepared once (the per-row lookups run millions of times on a big file).
  template <typename Fn>
  bool scan(const std::string& sql, Fn&& row, std::int64_t bind = 0, bool bound = false) const {
    sqlite3_stmt*& st = cache_[sql];
    if (st == nullptr && sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      sqlite3_finalize(st);
      st = nullptr;
      return false;
    }
    if (bound) sqlite3_bind_int64(st, 1, bind);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) row(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE;
  }

 private:
  static bool shorter_than_its_header(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    unsigned char h[100];
    struct stat st {};
    const bool ok = ::pread(fd, h, sizeof h, 0) == static_cast<ssize_t>(sizeof h) && ::fstat(fd, &st) == 0;
    ::close(fd);
    if (!ok) return false;
    std::uint64_t page = (std::uint64_t{h[16]} << 8) | h[17];
    if (page == 1) page = 65536;
    const std::uint64_t pages = (std::uint64_t{h[28]} << 24) | (std::uint64_t{h[29]} << 16) | (std::uint64_t{h[30]} << 8) | h[31];
    return page != 0 && static_cast<std::uint64_t>(st.st_size) < page * pages;
  }

  sqlite3* db_ = nullptr;
  bool truncated_ = false;
  mutable std::map<std::string, sqlite3_stmt*> cache_;
};

std::string text_of(sqlite3_stmt* st, int i) {
  const auto* p = sqlite3_column_text(st, i);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(st, i)))
           : std::string();
}

bool is(sqlite3_stmt* st, int i, int type) { return sqlite3_column_type(st, i) == type; }

// A text read from the damaged file can be trusted: not one that a cut-off file filled with zeros.
bool readable_text(const Reader& r, const std::string& text) {
  return !r.truncated() || text.find('\0') == std::string::npos;
}

struct SessionRow {
  std::string id, app, model_id;
  std::int64_t uid = 0, created_ms = 0, updated_ms = 0;
  std::optional<std::string> system_prompt;
  bool system_prompt_lost = false;
  std::vector<std::uint8_t> tokens;
  bool tokens_lost = false;
  // Schema 2: the overflow policy and the window (a schema-1 file has none: the defaults).
  std::optional<std::string> overflow;
  std::int64_t window_first_message = 0, dropped_tokens = 0;
};

struct MessageRow {
  std::string session_id, role, content;
  std::int64_t seq = 0, created_ms = 0;
  std::optional<std::int64_t> token_end;  // schema 2; unreadable: NULL (unknown, re-derived when needed)
};

// Whether the damaged file's `table` declares `column` (a schema-1 file lacks schema 2's).
bool declares(const Reader& r, const std::string& table, const std::string& column) {
  bool found = false;
  (void)r.scan("SELECT count(*) FROM pragma_table_info('" + table + "') WHERE name = '" + column + "'",
               [&](sqlite3_stmt* st) { found = sqlite3_column_int64(st, 0) > 0; });
  return found;
}

// Every rowid of `table` that some route still reaches, and what the indexes say about them.
struct Rowids {
  std::set<std::int64_t> listed;                          // named by a scan of the table or an index
  std::map<std::int64_t, std::string> session_of;         // from an index: the session id of the row
  std::map<std::int64_t, std::int64_t> seq_of;            // messages: the seq, from the primary key
};

Rowids find_rowids(const Reader& r, const std::string& table) {
  Rowids out;
  auto add = [&](sqlite3_stmt* st) { out.listed.insert(sqlite3_column_int64(st, 0)); };
  for (const char* dir : {"", " DESC"}) {
    (void)r.scan("SELECT rowid FROM " + table + " NOT INDEXED ORDER BY rowid" + dir, add);
  }
  std::vector<std::string> indexes;
  (void)r.scan("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '" + table + "'",
               [&](sqlite3_stmt* st) { indexes.push_back(text_of(st, 0)); });
  for (const auto& index : indexes) {
    // The sessions' id and the messages' (session_id, seq) come with their index's scan: they name
    // the rows the table can no longer give.
    std::string cols = "rowid";
    if (index == "sqlite_autoindex_sessions_1") cols = "rowid, id";
    if (index == "sqlite_autoindex_messages_1") cols = "rowid, session_id, seq";
    for (const char* dir : {"ASC", "DESC"}) {
      const std::string order = index == "sqlite_autoindex_messages_1" ? std::string("session_id ") + dir + ", seq " + dir
                                : index == "sqlite_autoindex_sessions_1" ? std::string("id ") + dir
                                : index == "sessions_by_uid"             ? std::string("uid ") + dir
                                                                         : std::string("rowid ") + dir;
      (void)r.scan("SELECT " + cols + " FROM " + table + " INDEXED BY \"" + index + "\" ORDER BY " + order,
                   [&](sqlite3_stmt* st) {
                     const std::int64_t rowid = sqlite3_column_int64(st, 0);
                     out.listed.insert(rowid);
                     if (sqlite3_column_count(st) > 1 && is(st, 1, SQLITE_TEXT)) out.session_of[rowid] = text_of(st, 1);
                     if (sqlite3_column_count(st) > 2 && is(st, 2, SQLITE_INTEGER)) out.seq_of[rowid] = sqlite3_column_int64(st, 2);
                   });
    }
  }
  return out;
}

// Rowids SQLite hands out for these tables (1 up); a damaged index may name anything.
constexpr std::int64_t kMaxRowid = std::int64_t{1} << 62;

enum class Read { row, none, unreadable };

// Reads every rowid from 1 to the highest one listed (up to kMaxProbeSpan), every one listed, and
// then on past the highest row read until kProbePastEnd lookups in a row find nothing; each once.
// read(rowid) returns what it found.
template <typename ReadFn>
void probe(const Rowids& ids, ReadFn&& read) {
  std::int64_t hi = 0;
  for (const std::int64_t r : ids.listed) {
    if (r >= 1 && r <= kMaxRowid) hi = std::max(hi, r);
  }
  const std::int64_t dense = std::min(hi, kMaxProbeSpan);
  std::int64_t top = 0;  // the highest rowid read
  auto attempt = [&](std::int64_t r) {
    if (read(r) == Read::row && r <= kMaxRowid) top = std::max(top, r);
  };
  for (std::int64_t r = 1; r <= dense; ++r) attempt(r);
  for (const std::int64_t r : ids.listed) {
    if (r < 1 || r > dense) attempt(r);
  }
  for (std::int64_t r = top + 1, misses = 0; misses < kProbePastEnd && r <= kMaxRowid; ++r) {
    if (r <= dense || ids.listed.count(r)) continue;  // read already
    misses = read(r) == Read::row ? 0 : misses + 1;
  }
}

Read read_session(const Reader& r, std::int64_t rowid, SessionRow& out, bool has_window) {
  bool found = false, valid = false;
  const bool ok = r.scan(
      "SELECT id, uid, app, created_ms, updated_ms, model_id FROM sessions WHERE rowid = ?",
      [&](sqlite3_stmt* st) {
        found = true;
        valid = is(st, 0, SQLITE_TEXT) && is(st, 1, SQLITE_INTEGER) && is(st, 2, SQLITE_TEXT) &&
                is(st, 3, SQLITE_INTEGER) && is(st, 4, SQLITE_INTEGER) && is(st, 5, SQLITE_TEXT) &&
                sqlite3_column_int64(st, 1) >= 0 && sqlite3_column_int64(st, 1) <= 0xFFFFFFFFll;
        if (!valid) return;
        out.id = text_of(st, 0);
        out.uid = sqlite3_column_int64(st, 1);
        out.app = text_of(st, 2);
        out.created_ms = sqlite3_column_int64(st, 3);
        out.updated_ms = sqlite3_column_int64(st, 4);
        out.model_id = text_of(st, 5);
        valid = !out.id.empty();
      },
      rowid, true);
  if (!ok || (found && !valid)) return Read::unreadable;
  if (!found) return Read::none;
  bool prompt_read = false;
  const bool prompt_ok = r.scan(
      "SELECT system_prompt FROM sessions WHERE rowid = ?",
      [&](sqlite3_stmt* st) {
        if (is(st, 0, SQLITE_TEXT)) out.system_prompt = text_of(st, 0);
        prompt_read = (is(st, 0, SQLITE_TEXT) && readable_text(r, *out.system_prompt)) || is(st, 0, SQLITE_NULL);
      },
      rowid, true);
  out.system_prompt_lost = !prompt_ok || !prompt_read;
  if (out.system_prompt_lost) out.system_prompt.reset();
  bool tokens_read = false;
  const bool tokens_ok = r.scan(
      "SELECT tokens FROM sessions WHERE rowid = ?",
      [&](sqlite3_stmt* st) {
        if (!is(st, 0, SQLITE_BLOB)) return;
        const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(st, 0));
        const int n = sqlite3_column_bytes(st, 0);
        if (p) out.tokens.assign(p, p + n);
        tokens_read = p != nullptr || n == 0;
      },
      rowid, true);
  out.tokens_lost = !tokens_ok || !tokens_read;
  if (has_window) {
    // The window says which messages the tokens hold: without it the tokens cannot be trusted
    // either, and are re-derived (the window then starts again at the first message).
    bool window_read = false;
    const bool window_ok = r.scan(
        "SELECT overflow, window_first_message, dropped_tokens FROM sessions WHERE rowid = ?",
        [&](sqlite3_stmt* st) {
          window_read = (is(st, 0, SQLITE_TEXT) || is(st, 0, SQLITE_NULL)) && is(st, 1, SQLITE_INTEGER) &&
                        is(st, 2, SQLITE_INTEGER) && sqlite3_column_int64(st, 1) >= 0 && sqlite3_column_int64(st, 2) >= 0;
          if (!window_read) return;
          if (is(st, 0, SQLITE_TEXT)) out.overflow = text_of(st, 0);
          out.window_first_message = sqlite3_column_int64(st, 1);
          out.dropped_tokens = sqlite3_column_int64(st, 2);
        },
        rowid, true);
    if (!window_ok || !window_read) {
      out.overflow.reset();
      out.window_first_message = out.dropped_tokens = 0;
      out.tokens_lost = true;
    }
  }
  if (out.tokens_lost) out.tokens.clear();
  return Read::row;
}

Read read_message(const Reader& r, std::int64_t rowid, MessageRow& out, bool has_token_end) {
  bool found = false, valid = false;
  const bool ok = r.scan(
      "SELECT session_id, seq, role, content, created_ms FROM messages WHERE rowid = ?",
      [&](sqlite3_stmt* st) {
        found = true;
        valid = is(st, 0, SQLITE_TEXT) && is(st, 1, SQLITE_INTEGER) && is(st, 2, SQLITE_TEXT) &&
                is(st, 3, SQLITE_TEXT) && is(st, 4, SQLITE_INTEGER) && sqlite3_column_int64(st, 1) >= 0;
        if (!valid) return;
        out.session_id = text_of(st, 0);
        out.seq = sqlite3_column_int64(st, 1);
        out.role = text_of(st, 2);
        out.content = text_of(st, 3);
        out.created_ms = sqlite3_column_int64(st, 4);
        valid = (out.role == "system" || out.role == "user" || out.role == "assistant") && readable_text(r, out.content);
      },
      rowid, true);
  if (!ok || (found && !valid)) return Read::unreadable;
  if (found && has_token_end) {
    (void)r.scan(
        "SELECT token_end FROM messages WHERE rowid = ?",
        [&](sqlite3_stmt* st) {
          if (is(st, 0, SQLITE_INTEGER) && sqlite3_column_int64(st, 0) >= 0) out.token_end = sqlite3_column_int64(st, 0);
        },
        rowid, true);
  }
  return found ? Read::row : Read::none;
}

void add_unique(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

// Reads what can be read of the damaged database at `path` and writes it into `out` (a new, empty
// session database), filling in the report.
Status salvage_rows(const std::string& path, Db& out, SalvageReport& report) {
  Reader r;
  if (auto st = r.open(path); !st) {
    report.nothing_readable = true;
    return {};
  }
  int n_tables = -1;
  (void)r.scan("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('sessions', 'messages')",
               [&](sqlite3_stmt* st) { n_tables = static_cast<int>(sqlite3_column_int64(st, 0)); });
  if (n_tables != 2) {
    report.nothing_readable = true;
    return {};
  }

  // Sessions, by id (the first readable row of an id wins; a second one is reported lost).
  std::map<std::string, SessionRow> sessions;
  const Rowids srows = find_rowids(r, "sessions");
  std::size_t unnamed_lost = 0;
  const bool has_window = declares(r, "sessions", "window_first_message");
  const bool has_token_end = declares(r, "messages", "token_end");
  probe(srows, [&](std::int64_t rowid) {
    SessionRow row;
    const Read got = read_session(r, rowid, row, has_window);
    if (got == Read::row) {
      if (!sessions.emplace(row.id, row).second) add_unique(report.sessions_lost, row.id + " (a second record)");
    } else if (got == Read::unreadable && srows.listed.count(rowid)) {
      if (auto it = srows.session_of.find(rowid); it != srows.session_of.end()) add_unique(report.sessions_lost, it->second);
      else ++unnamed_lost;
    }
    return got;
  });

  // Messages, by (session, seq). Lost ones are counted per session ("" where not even that is
  // known): rows the primary key's index names that were not read, gaps in a session's numbering
  // (from 0, without gaps), rows a table scan named that could not be read.
  std::map<std::pair<std::string, std::int64_t>, MessageRow> messages;
  std::map<std::string, std::set<std::int64_t>> lost_seqs;
  std::size_t lost_unnamed = 0;
  const Rowids mrows = find_rowids(r, "messages");
  probe(mrows, [&](std::int64_t rowid) {
    MessageRow row;
    const Read got = read_message(r, rowid, row, has_token_end);
    if (got == Read::row) {
      if (!messages.emplace(std::make_pair(row.session_id, row.seq), row).second) ++lost_unnamed;
    } else if (got == Read::unreadable && mrows.listed.count(rowid) && !mrows.seq_of.count(rowid)) {
      ++lost_unnamed;
    }
    return got;
  });
  for (const auto& [rowid, sid] : mrows.session_of) {
    if (auto q = mrows.seq_of.find(rowid); q != mrows.seq_of.end() && !messages.count({sid, q->second})) {
      lost_seqs[sid].insert(q->second);
    }
  }
  std::map<std::string, std::set<std::int64_t>> seqs;
  for (const auto& [key, m] : messages) seqs[key.first].insert(key.second);
  for (const auto& [sid, have] : seqs) {
    for (std::int64_t q = 0; q < *have.rbegin(); ++q) {
      if (!have.count(q)) lost_seqs[sid].insert(q);
    }
  }

  return out.transaction([&]() -> Status {
    auto ins = out.prepare(
        "INSERT INTO sessions(id, uid, app, system_prompt, created_ms, updated_ms, model_id, tokens, overflow,"
        " window_first_message, dropped_tokens) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!ins) return ins.error();
    auto msg = out.prepare(
        "INSERT INTO messages(session_id, seq, role, content, created_ms, token_end) VALUES(?, ?, ?, ?, ?, ?)");
    if (!msg) return msg.error();
    for (auto& [id, s] : sessions) {
      SessionRecord rec;
      rec.id = id;
      rec.uid = static_cast<std::uint32_t>(s.uid);
      rec.app = s.app;
      rec.system_prompt = s.system_prompt;
      if (s.system_prompt_lost) {
        // The system prompt is also the session's first message.
        if (auto m = messages.find({id, 0}); m != messages.end() && m->second.role == "system") {
          rec.system_prompt = m->second.content;
        } else {
          add_unique(report.sessions_damaged, id + " (its system prompt)");
        }
      }
      rec.created_ms = s.created_ms;
      rec.updated_ms = s.updated_ms;
      // Unreadable tokens: an empty sequence under no model, which the next turn re-derives from
      // the messages (as after a model change).
      rec.model_id = s.tokens_lost ? std::string() : s.model_id;
      if (s.tokens_lost) add_unique(report.tokens_lost, id);
      ins->reset();
      ins->bind(1, rec.id).bind(2, static_cast<std::int64_t>(rec.uid)).bind(3, rec.app);
      if (rec.system_prompt) ins->bind(4, *rec.system_prompt);
      else ins->bind_null(4);
      // The tokens as they were read, whole or not: the next turn checks them (see Service).
      ins->bind(5, rec.created_ms).bind(6, rec.updated_ms).bind(7, rec.model_id).bind_blob(8, s.tokens);
      if (s.overflow) ins->bind(9, *s.overflow);
      else ins->bind_null(9);
      ins->bind(10, s.window_first_message).bind(11, s.dropped_tokens);
      LLMD_TRY_STATUS(ins->run());
      ++report.sessions_salvaged;
    }
    for (const auto& [key, m] : messages) {
      if (!sessions.count(key.first)) {
        // Whose they were is unknown (the session's record, with its owner, is lost): they stay
        // in the kept-aside file only.
        add_unique(report.sessions_lost, key.first);
        ++report.messages_lost;
        continue;
      }
      msg->reset();
      msg->bind(1, key.first).bind(2, key.second).bind(3, m.role).bind(4, m.content).bind(5, m.created_ms);
      // Offsets into tokens that were lost describe nothing: NULL (unknown).
      const auto sess = sessions.find(key.first);
      if (m.token_end && !sess->second.tokens_lost) msg->bind(6, *m.token_end);
      else msg->bind_null(6);
      LLMD_TRY_STATUS(msg->run());
      ++report.messages_salvaged;
    }
    for (const auto& [sid, q] : lost_seqs) {
      report.messages_lost += q.size();
      if (sessions.count(sid)) add_unique(report.sessions_damaged, sid + " (" + std::to_string(q.size()) + " messages)");
      else add_unique(report.sessions_lost, sid);
    }
    report.messages_lost += lost_unnamed;
    report.sessions_lost_unnamed = unnamed_lost;
    return {};
  });
}

// Why the database at `path` cannot be used as it is ("" if it can), from SQLite's full
// integrity check.
Result<std::string> integrity_problem(Db& db) {
  auto st = db.prepare("PRAGMA integrity_check(8)");
  if (!st) return st.error();
  std::string problems;
  while (true) {
    auto row = st->step();
    if (!row) return row.error();
    if (!*row) break;
    const std::string line = st->column_text(0);
    if (line == "ok") return std::string();
    if (!problems.empty()) problems += "; ";
    problems += line;
  }
  return problems.empty() ? std::string("integrity_check returned nothing") : problems;
}

}  // namespace

Result<std::unique_ptr<SessionStore>> SessionStore::open_or_salvage(const std::string& path, SalvageReport& report) {
  report = SalvageReport{};
  const std::string staged = path + ".salvaged";
  const std::string scratch = path + ".salvage-tmp";
  if (exists(staged)) {
    // A salvage finished writing but stopped before its file replaced the damaged one.
    LLMD_TRY_STATUS(install(staged, path));
    report.finished_earlier = true;
  }
  LLMD_TRY_STATUS(remove_with_companions(scratch));  // an unfinished salvage: it starts again

  if (exists(path)) {
    auto db = Db::open(path);
    std::string problem;
    if (!db) {
      if (db.error().code() != Errc::corrupt) return db.error();
      problem = db.error().message();
    } else {
      auto found = integrity_problem(**db);
      if (!found) {
        if (found.error().code() != Errc::corrupt) return found.error();
        problem = found.error().message();
      } else {
        problem = *found;
      }
      // This connection must not checkpoint the damaged WAL into the damaged file on close.
      if (!problem.empty()) sqlite3_db_config((*db)->handle(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    }
    if (problem.empty()) {
      std::unique_ptr<SessionStore> store(new SessionStore(std::move(*db)));
      LLMD_TRY_STATUS(store->migrate());
      return store;
    }
    if (db) db->reset();  // closed before anything else opens the file
    report.problem = problem;

    // 1. Keep the damaged files under a second name before anything replaces them.
    std::string aside = path + ".damaged-" + utc_stamp();
    for (int n = 1; exists(aside) || exists(aside + "-wal"); ++n) {
      aside = path + ".damaged-" + utc_stamp() + "." + std::to_string(n);
    }
    for (const auto& [from, to] : {std::pair{path, aside}, std::pair{path + "-wal", aside + "-wal"}}) {
      if (!exists(from)) continue;
      if (auto st = keep_aside(from, to); !st) {
        return st.error().with_context("the session database is damaged (" + problem +
                                       ") and could not be kept aside, so it was left as it is");
      }
      report.kept_aside.push_back(to);
    }
    LLMD_TRY_STATUS(sync_dir_of(path));

    // 2. Salvage into a new file, then make that file whole on its own (no WAL) and durable.
    {
      auto fresh = SessionStore::open(scratch);
      if (!fresh) return fresh.error().with_context("salvaging the session database");
      LLMD_TRY_STATUS(salvage_rows(path, *(*fresh)->db_, report));
      LLMD_TRY_STATUS((*fresh)->db_->exec("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;"));
    }
    if (exists(scratch + "-wal")) return Error(Errc::io_error, "the salvaged database kept a WAL after closing");
    LLMD_TRY_STATUS(sync_file(scratch));
    if (::rename(scratch.c_str(), staged.c_str()) != 0) return errno_error(errno, "renaming " + scratch);
    LLMD_TRY_STATUS(sync_dir_of(path));
    // 3. The commit point is passed: replace the damaged file.
    LLMD_TRY_STATUS(install(staged, path));
  }
  return SessionStore::open(path);
}

}  // namespace llmd::kvstore
