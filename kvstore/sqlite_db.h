// A thin RAII layer over the SQLite C API: a connection and prepared statements whose errors come
// back as llmd Errors. Used by the kvstore's SQLite index; nothing else talks to SQLite.
//
// Thread-safety: a Db (and its statements) is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

struct sqlite3;
struct sqlite3_stmt;

namespace llmd::kvstore {

class Statement;

class Db {
 public:
  // How committed transactions survive: full — a crash of the process or the machine
  // (synchronous=FULL, an fsync per commit); process — a crash of the process (kill -9), while a
  // power failure may roll back the latest commits, never corrupting the file (synchronous=NORMAL:
  // for caches whose loss costs only recomputation).
  enum class Durability { full, process };
  // Opens (creating if needed) the database file; sets WAL mode, the durability, foreign keys on.
  static Result<std::unique_ptr<Db>> open(const std::string& path, Durability durability = Durability::full);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  Status exec(std::string_view sql);  // one or more statements, no results
  Result<Statement> prepare(std::string_view sql);
  std::int64_t changes() const;

  // Runs fn inside BEGIN IMMEDIATE ... COMMIT; rolls back if fn fails.
  template <typename Fn>
  Status transaction(Fn&& fn) {
    LLMD_TRY_STATUS(exec("BEGIN IMMEDIATE"));
    Status st = fn();
    if (!st.ok()) {
      (void)exec("ROLLBACK");
      return st;
    }
    return exec("COMMIT");
  }

  Error error(std::string_view what) const;  // the connection's last error, mapped to Errc
  sqlite3* handle() const { return db_; }

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

class Statement {
 public:
  Statement(Statement&&) noexcept;
  Statement& operator=(Statement&&) noexcept;
  ~Statement();

  // Binding (1-based indexes, as SQLite). Text and blobs are copied by SQLite.
  Statement& bind(int i, std::int64_t v);
  Statement& bind(int i, std::string_view v);
  Statement& bind_blob(int i, std::span<const std::uint8_t> v);
  Statement& bind_null(int i);

  // Advances: true when a row is available, false when done.
  Result<bool> step();
  // Runs to completion, ignoring rows.
  Status run();
  void reset();

  std::int64_t column_int(int i) const;
  std::string column_text(int i) const;
  std::span<const std::uint8_t> column_blob(int i) const;  // valid until the next step/reset
  bool column_is_null(int i) const;

 private:
  friend class Db;
  Statement(const Db* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  const Db* db_;
  sqlite3_stmt* stmt_;
};

}  // namespace llmd::kvstore
