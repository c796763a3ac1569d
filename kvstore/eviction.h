// LCTRU eviction order (LLMS): the least compression-tolerable chunks go first (tolerance level of
// their codec: exact before q8_0 before q4_0 — the largest chunks, whose eviction frees the most),
// least recently used first within a level, and within one use time the later chunks of a session
// first (a session can only restore a prefix of its chunks, so its tail is worth least). Chunks of
// sessions in use are pinned and never chosen.
//
// Pure code; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace llmd::kvstore {

struct EvictionCandidate {
  int level = 0;               // tolerance_level(codec)
  std::uint64_t last_use = 0;  // a logical clock: larger is more recent
  std::uint32_t index = 0;     // the chunk's index in its session
  std::uint64_t bytes = 0;
  bool pinned = false;
};

// Indexes into `candidates` of the chunks to evict, in eviction order, until at least `need` bytes
// are freed; fewer (all unpinned ones) if that is impossible — the caller checks the sum.
std::vector<std::size_t> lctru_victims(std::span<const EvictionCandidate> candidates, std::uint64_t need);

}  // namespace llmd::kvstore
