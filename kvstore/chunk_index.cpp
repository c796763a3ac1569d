// The chunk index over SQLite (see chunk_index.h).
#include "kvstore/chunk_index.h"

#include <optional>
#include <system_error>

#include "kvstore/sqlite_db.h"

namespace llmd::kvstore {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
  session TEXT NOT NULL, idx INTEGER NOT NULL, n_cells INTEGER NOT NULL, codec INTEGER NOT NULL,
  prefix_hash INTEGER NOT NULL, file TEXT NOT NULL, disk_codec INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(session, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners(
  session TEXT PRIMARY KEY, uid INTEGER NOT NULL, anonymous INTEGER NOT NULL) WITHOUT ROWID;
)sql";

// A busy store commits after every write-back: checkpoint the WAL every 128 pages (512 KiB) and
// truncate it to that afterwards, so that the index's own files stay small beside the disk reserve
// on a small file system (SQLite's defaults let the WAL grow to 4 MiB and keep it). A checkpoint
// costs one fsync at synchronous=NORMAL: one per ~40 write-backs.
constexpr const char* kPragmas = "PRAGMA wal_autocheckpoint=128; PRAGMA journal_size_limit=524288;";

const std::vector<std::string> kMetaColumns = {"key", "value"};
const std::vector<std::string> kChunkColumns = {"session", "idx",  "n_cells",    "codec",
                                                "prefix_hash", "file", "disk_codec", "bytes"};
const std::vector<std::string> kOwnerColumns = {"session", "uid", "anonymous"};

Result<std::vector<std::string>> columns_of(Db& db, const std::string& table) {
  auto q = db.prepare("PRAGMA table_info(" + table + ")");
  if (!q) return q.error();
  std::vector<std::string> out;
  while (true) {
    auto row = q->step();
    if (!row) return row.error();
    if (!*row) break;
    out.push_back(q->column_text(1));
  }
  return out;
}

// A codec column's value; nullopt for none llmd knows (a damaged or future row: not loaded).
std::optional<Codec> codec_of(std::int64_t v) {
  if (v < 0 || v >= static_cast<std::int64_t>(kNumCodecs)) return std::nullopt;
  return static_cast<Codec>(v);
}

}  // namespace

ChunkIndex::ChunkIndex(std::filesystem::path path, std::string identity)
    : path_(std::move(path)), identity_(std::move(identity)) {}

ChunkIndex::~ChunkIndex() = default;

// SQLITE_CORRUPT and SQLITE_NOTADB are corrupt; a schema that is not ours shows as SQLite's generic
// error (internal) or a constraint (invalid_argument). Locked files, a full disk or no permission
// are not the file's fault: discarding would not help and could hide a second llmd on the same dir.
bool ChunkIndex::is_damage(const Error& e) {
  return e.code() == Errc::corrupt || e.code() == Errc::internal || e.code() == Errc::invalid_argument;
}

Result<ChunkIndex::Opened> ChunkIndex::open(const std::filesystem::path& path, const std::string& identity) {
  std::unique_ptr<ChunkIndex> index(new ChunkIndex(path, identity));
  Opened out;
  if (Status st = index->open_existing(out); !st) {
    if (!is_damage(st.error())) return st.error();
    out = Opened{};
    out.discarded = st.error().message();
    LLMD_TRY_STATUS(index->recreate());
  }
  out.index = std::move(index);
  return out;
}

Status ChunkIndex::open_existing(Opened& out) {
  auto db = Db::open(path_.string(), Db::Durability::process);
  if (!db) return db.error();
  db_ = std::move(*db);
  LLMD_TRY_STATUS(db_->exec(kPragmas));
  {
    // Cheap at the index's size (a few thousand rows), and it reads every page: damage that no
    // query would meet until later is found now.
    auto q = db_->prepare("PRAGMA quick_check");
    if (!q) return q.error();
    auto row = q->step();
    if (!row) return row.error();
    const std::string verdict = *row ? q->column_text(0) : "no answer";
    if (verdict != "ok") return Error(Errc::corrupt, "integrity check: " + verdict);
  }
  for (const auto& [table, expected] : {std::pair{std::string("meta"), &kMetaColumns},
                                        std::pair{std::string("chunks"), &kChunkColumns},
                                        std::pair{std::string("owners"), &kOwnerColumns}}) {
    auto cols = columns_of(*db_, table);
    if (!cols) return cols.error();
    if (!cols->empty() && *cols != *expected) return Error(Errc::corrupt, "table " + table + " has other columns");
  }
  LLMD_TRY_STATUS(db_->exec(kSchema));

  std::string stored;
  {
    auto q = db_->prepare("SELECT value FROM meta WHERE key = 'identity'");
    if (!q) return q.error();
    auto row = q->step();
    if (!row) return row.error();
    if (*row) stored = q->column_text(0);
  }
  if (stored != identity_) {
    out.identity_changed = !stored.empty();
    return db_->transaction([&]() -> Status {
      LLMD_TRY_STATUS(db_->exec("DELETE FROM chunks; DELETE FROM owners"));
      auto up = db_->prepare("INSERT OR REPLACE INTO meta(key, value) VALUES('identity', ?)");
      if (!up) return up.error();
      return up->bind(1, identity_).run();
    });
  }
  auto q = db_->prepare("SELECT session, idx, n_cells, codec, prefix_hash, file, disk_codec, bytes FROM chunks");
  if (!q) return q.error();
  while (true) {
    auto row = q->step();
    if (!row) return row.error();
    if (!*row) break;
    IndexRow r;
    const auto codec = codec_of(q->column_int(3)), disk_codec = codec_of(q->column_int(6));
    if (!codec || !disk_codec) continue;  // its file is swept as one without a row
    r.session = q->column_text(0);
    r.idx = static_cast<std::uint32_t>(q->column_int(1));
    r.n_cells = static_cast<std::uint32_t>(q->column_int(2));
    r.codec = *codec;
    r.prefix_hash = static_cast<std::uint64_t>(q->column_int(4));
    r.file = q->column_text(5);
    r.disk_codec = *disk_codec;
    r.bytes = static_cast<std::uint64_t>(q->column_int(7));
    out.rows.push_back(std::move(r));
  }
  auto o = db_->prepare("SELECT session, uid, anonymous FROM owners");
  if (!o) return o.error();
  while (true) {
    auto row = o->step();
    if (!row) return row.error();
    if (!*row) break;
    OwnerRow r;
    r.session = o->column_text(0);
    r.uid = static_cast<std::uint32_t>(o->column_int(1));
    r.anonymous = o->column_int(2) != 0;
    out.owners.push_back(std::move(r));
  }
  return {};
}

void ChunkIndex::remove_files() {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) std::filesystem::remove(path_.string() + suffix, ec);
}

Status ChunkIndex::recreate() {
  db_.reset();
  remove_files();
  Opened fresh;
  if (Status st = open_existing(fresh); !st) {
    db_.reset();
    return st;
  }
  return {};
}

Status ChunkIndex::apply(const IndexUpdate& u) {
  if (u.empty()) return {};
  if (!db_) return Error(Errc::unavailable, "the chunk index is closed");
  return db_->transaction([&]() -> Status {
    if (!u.owners.empty()) {
      auto up = db_->prepare("INSERT OR REPLACE INTO owners(session, uid, anonymous) VALUES(?, ?, ?)");
      if (!up) return up.error();
      for (const OwnerRow& r : u.owners) {
        LLMD_TRY_STATUS(up->bind(1, r.session)
                            .bind(2, static_cast<std::int64_t>(r.uid))
                            .bind(3, static_cast<std::int64_t>(r.anonymous ? 1 : 0))
                            .run());
        up->reset();
      }
    }
    if (!u.owners_remove.empty()) {
      auto del = db_->prepare("DELETE FROM owners WHERE session = ?");
      if (!del) return del.error();
      for (const auto& session : u.owners_remove) {
        LLMD_TRY_STATUS(del->bind(1, session).run());
        del->reset();
      }
    }
    if (!u.remove.empty()) {
      auto del = db_->prepare("DELETE FROM chunks WHERE session = ? AND idx = ?");
      if (!del) return del.error();
      for (const auto& [session, idx] : u.remove) {
        LLMD_TRY_STATUS(del->bind(1, session).bind(2, static_cast<std::int64_t>(idx)).run());
        del->reset();
      }
    }
    if (!u.put.empty()) {
      auto up = db_->prepare(
          "INSERT OR REPLACE INTO chunks(session, idx, n_cells, codec, prefix_hash, file, disk_codec, bytes) "
          "VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
      if (!up) return up.error();
      for (const IndexRow& r : u.put) {
        LLMD_TRY_STATUS(up->bind(1, r.session)
                            .bind(2, static_cast<std::int64_t>(r.idx))
                            .bind(3, static_cast<std::int64_t>(r.n_cells))
                            .bind(4, static_cast<std::int64_t>(r.codec))
                            .bind(5, static_cast<std::int64_t>(r.prefix_hash))
                            .bind(6, r.file)
                            .bind(7, static_cast<std::int64_t>(r.disk_codec))
                            .bind(8, static_cast<std::int64_t>(r.bytes))
                            .run());
        up->reset();
      }
    }
    if (!u.remove_from.empty()) {
      auto del = db_->prepare("DELETE FROM chunks WHERE session = ? AND idx >= ?");
      if (!del) return del.error();
      for (const auto& [session, from] : u.remove_from) {
        LLMD_TRY_STATUS(del->bind(1, session).bind(2, static_cast<std::int64_t>(from)).run());
        del->reset();
      }
    }
    return {};
  });
}

}  // namespace llmd::kvstore
