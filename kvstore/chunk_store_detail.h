// What the chunk store's files share (chunk_store.cpp, chunk_store_write.cpp,
// chunk_store_read.cpp): not part of its interface.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

namespace llmd::kvstore::detail {

// What a chunk file takes of its file system beyond its bytes (a page, a block) and what one index
// commit may add to the index's WAL: both counted against the disk reserve.
inline constexpr std::uint64_t kBlockBytes = 4096;
inline constexpr std::uint64_t kIndexCommitBytes = 64 << 10;
inline std::uint64_t file_blocks(std::uint64_t bytes) { return (bytes + kBlockBytes - 1) / kBlockBytes * kBlockBytes; }

// Session ids become directory names: only [A-Za-z0-9_-], 1..64 characters.
inline bool safe_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

}  // namespace llmd::kvstore::detail
