// The chunk store's index (kv/index.db): which file holds which chunk of which session, with the
// chunk's length, codecs and prefix hash, in SQLite (WAL, synchronous=NORMAL).
//
// The index is a cache, like the chunks it names: losing it costs recomputation, never a session.
// So damage never stops the store. open() discards a file that SQLite cannot open as a database,
// that fails `PRAGMA quick_check`, that has another schema, or whose rows cannot be read (together
// with its -wal and -shm), creates an empty index and says why; the store then removes the chunk
// files nobody names any more. SQLite reporting corruption later (Errc::corrupt from apply()) is
// met the same way by recreate().
//
// Schema:  meta(key TEXT PRIMARY KEY, value TEXT)   'identity' = what the rows are valid for
//          chunks(session, idx, n_cells, codec, prefix_hash, file, disk_codec, bytes)
//                 PRIMARY KEY(session, idx), WITHOUT ROWID
//          owners(session PRIMARY KEY, uid, anonymous)   whose KV a key's chunks are (chunks are
//                 shared only within one uid) and whether the key is an anonymous prefix entry
//                 (a stateless request's history) rather than a session
//
// Thread-safety: one thread at a time (the store's own thread once the store is open).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "kvstore/chunk.h"

namespace llmd::kvstore {

class Db;

struct IndexRow {
  std::string session;
  std::uint32_t idx = 0;
  std::uint32_t n_cells = 0;
  Codec codec = Codec::exact;  // the policy's choice (the RAM copy's codec)
  std::uint64_t prefix_hash = 0;
  std::string file;            // in the session's directory
  Codec disk_codec = Codec::exact;
  std::uint64_t bytes = 0;     // the file's
};

struct OwnerRow {
  std::string session;
  std::uint32_t uid = 0;
  bool anonymous = false;
};

// Changes applied in one transaction, in this order.
struct IndexUpdate {
  std::vector<OwnerRow> owners;                                     // inserted or replaced
  std::vector<std::string> owners_remove;
  std::vector<std::pair<std::string, std::uint32_t>> remove;       // rows (session, idx)
  std::vector<IndexRow> put;                                        // inserted or replaced
  std::vector<std::pair<std::string, std::uint32_t>> remove_from;  // a session's rows with idx >= n
  bool empty() const {
    return owners.empty() && owners_remove.empty() && remove.empty() && put.empty() && remove_from.empty();
  }
};

class ChunkIndex {
 public:
  struct Opened {
    std::unique_ptr<ChunkIndex> index;
    std::vector<IndexRow> rows;  // every row, when the identity is the same as before
    std::vector<OwnerRow> owners;
    bool identity_changed = false;  // an index of another identity: its rows were deleted
    std::string discarded;          // not empty: the old index was damaged (what was found), and discarded
  };
  // Opens or creates the index at `path` for rows valid under `identity` (the model, KV layout
  // and chunk format: rows under another identity are deleted). Errors (only when not even a
  // fresh index can be made): io_error, permission_denied, resource_exhausted.
  static Result<Opened> open(const std::filesystem::path& path, const std::string& identity);
  ~ChunkIndex();
  ChunkIndex(const ChunkIndex&) = delete;
  ChunkIndex& operator=(const ChunkIndex&) = delete;

  // All in one transaction, or nothing. Errors: corrupt (the file is damaged: recreate() it),
  // resource_exhausted (disk full), io_error.
  Status apply(const IndexUpdate& update);
  // Removes the index's files and creates an empty index of the same identity. Errors as open().
  Status recreate();
  // Whether an error of apply() says that the file is damaged (corrupt, or not the schema it had),
  // as opposed to unreachable for now (locked, disk full, I/O): then recreate() is the answer.
  static bool is_damage(const Error& error);

 private:
  ChunkIndex(std::filesystem::path path, std::string identity);
  // Opens the file as it is: checks, schema, identity; fills `out` (rows, identity_changed).
  Status open_existing(Opened& out);
  void remove_files();

  std::filesystem::path path_;
  std::string identity_;
  std::unique_ptr<Db> db_;
};

}  // namespace llmd::kvstore
