// SQLite RAII wrappers (see sqlite_db.h).
#include "kvstore/sqlite_db.h"

#include <sqlite3.h>

#include <cerrno>
#include <utility>

namespace llmd::kvstore {
namespace {

// sys_errno: the errno of the failed system call behind an SQLITE_IOERR (sqlite3_system_errno).
Errc map_code(int rc, int sys_errno = 0) {
  // A file shorter than its header says (truncated) reads as a short read.
  if (rc == SQLITE_IOERR_SHORT_READ) return Errc::corrupt;
  switch (rc & 0xff) {
    case SQLITE_CORRUPT: case SQLITE_NOTADB: return Errc::corrupt;
    case SQLITE_FULL: return Errc::no_space;
    case SQLITE_NOMEM: return Errc::resource_exhausted;
    case SQLITE_PERM: case SQLITE_READONLY: case SQLITE_AUTH: return Errc::permission_denied;
    case SQLITE_IOERR:
      // SQLite answers SQLITE_FULL for ENOSPC on a write, but SQLITE_IOERR_* for EDQUOT, and for
      // ENOSPC where it extends or syncs a file.
      return sys_errno == ENOSPC || sys_errno == EDQUOT ? Errc::no_space : Errc::io_error;
    case SQLITE_CANTOPEN: case SQLITE_BUSY: case SQLITE_LOCKED: return Errc::io_error;
    case SQLITE_CONSTRAINT: case SQLITE_MISMATCH: case SQLITE_TOOBIG: return Errc::invalid_argument;
    default: return Errc::internal;
  }
}

}  // namespace

Result<std::unique_ptr<Db>> Db::open(const std::string& path, Durability durability) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    if (raw) sqlite3_close(raw);
    return Error(map_code(rc), "opening database " + path + ": " + msg);
  }
  std::unique_ptr<Db> db(new Db(raw));
  sqlite3_busy_timeout(raw, 5000);
  sqlite3_extended_result_codes(raw, 1);
  // Refuse a file that is not a database before changing anything in it; and until it is
  // accepted, closing must not checkpoint a WAL into it.
  sqlite3_db_config(raw, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  LLMD_TRY_STATUS(db->exec("SELECT count(*) FROM sqlite_master"));
  LLMD_TRY_STATUS(db->exec(durability == Durability::full
                               ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                               : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"));
  sqlite3_db_config(raw, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, nullptr);
  return db;
}

Db::~Db() { sqlite3_close_v2(db_); }

Error Db::error(std::string_view what) const {
  return Error(map_code(sqlite3_extended_errcode(db_), sqlite3_system_errno(db_)),
               std::string(what) + ": " + sqlite3_errmsg(db_));
}

Status Db::exec(std::string_view sql) {
  const std::string s(sql);
  char* err = nullptr;
  if (sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    Error e = error("sql");
    sqlite3_free(err);
    return e;
  }
  return {};
}

Result<Statement> Db::prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK) {
    return error("preparing statement");
  }
  return Statement(this, stmt);
}

std::int64_t Db::changes() const { return sqlite3_changes64(db_); }

Statement::Statement(Statement&& o) noexcept : db_(o.db_), stmt_(std::exchange(o.stmt_, nullptr)) {}

Statement& Statement::operator=(Statement&& o) noexcept {
  if (this != &o) {
    if (stmt_) sqlite3_finalize(stmt_);
    db_ = o.db_;
    stmt_ = std::exchange(o.stmt_, nullptr);
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

Statement& Statement::bind(int i, std::int64_t v) {
  sqlite3_bind_int64(stmt_, i, v);
  return *this;
}

Statement& Statement::bind(int i, std::string_view v) {
  sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  return *this;
}

Statement& Statement::bind_blob(int i, std::span<const std::uint8_t> v) {
  // An empty span may have a null data pointer, which SQLite would bind as NULL, not as x''.
  if (v.empty()) sqlite3_bind_zeroblob(stmt_, i, 0);
  else sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT);
  return *this;
}

Statement& Statement::bind_null(int i) {
  sqlite3_bind_null(stmt_, i);
  return *this;
}

Result<bool> Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->error("executing statement");
}

Status Statement::run() {
  while (true) {
    auto r = step();
    if (!r) return r.error();
    if (!*r) return {};
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::int64_t Statement::column_int(int i) const { return sqlite3_column_int64(stmt_, i); }

std::string Statement::column_text(int i) const {
  const auto* p = sqlite3_column_text(stmt_, i);
  const int n = sqlite3_column_bytes(stmt_, i);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

std::span<const std::uint8_t> Statement::column_blob(int i) const {
  const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, i));
  const int n = sqlite3_column_bytes(stmt_, i);
  return p ? std::span<const std::uint8_t>(p, static_cast<size_t>(n)) : std::span<const std::uint8_t>();
}

bool Statement::column_is_null(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }

}  // namespace llmd::kvstore
