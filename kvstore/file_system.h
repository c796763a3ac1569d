// The file operations the chunk store's disk tier (T2) uses, behind a small interface so that tests
// can inject write errors (a full disk, an I/O error) into the real store.
//
// real_file_system(): POSIX files. write_file is atomic: the bytes go to "<path>.tmp", then are
// renamed over path, so a reader (or a restart after a crash) sees the old file or the new one,
// never a torn one (a torn .tmp is swept at startup). Files are not fsync'd: a chunk lost or torn
// by a power failure fails its checksum and is recomputed from the session's tokens.
//
// free_bytes() is what the disk reserve is kept by (statvfs: the bytes an unprivileged writer may
// still use).
//
// Thread-safety: the implementations are stateless and may be used from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace llmd::kvstore {

struct DirEntry {
  std::string name;  // the file name, without its directory
  bool is_dir = false;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Errors: resource_exhausted (ENOSPC, EDQUOT), io_error, permission_denied.
  virtual Status write_file(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) = 0;
  // Reads the whole file into `out` (resized to it; its capacity is reused). Errors: not_found,
  // io_error, corrupt (larger than max_bytes).
  virtual Status read_file(const std::filesystem::path& path, std::uint64_t max_bytes, std::vector<std::uint8_t>& out) = 0;
  virtual Status remove_file(const std::filesystem::path& path) = 0;  // a missing file is fine
  virtual Status make_dirs(const std::filesystem::path& path) = 0;
  // The entries of a directory ("." and ".." left out), in no particular order. Errors: not_found,
  // io_error, permission_denied.
  virtual Result<std::vector<DirEntry>> list_dir(const std::filesystem::path& path) = 0;
  // Removes a directory and everything in it; a missing one is fine.
  virtual Status remove_tree(const std::filesystem::path& path) = 0;
  // Removes a directory if it is empty; a missing one is fine. Errors: busy (not empty), io_error.
  virtual Status remove_empty_dir(const std::filesystem::path& path) = 0;
  // Free bytes available to unprivileged writers on the file system holding `path`. Errors:
  // not_found, io_error.
  virtual Result<std::uint64_t> free_bytes(const std::filesystem::path& path) = 0;
};

std::shared_ptr<FileSystem> real_file_system();
// The bytes an unprivileged writer may still use on the file system of `path` (statvfs f_bavail x
// f_frsize): what PosixFileSystem::free_bytes answers, and what the daemon's disk-reserve-mib
// check reads for the state directory.
Result<std::uint64_t> free_bytes_at(const std::filesystem::path& path);

}  // namespace llmd::kvstore
