// LCTRU eviction order (see eviction.h).
#include "kvstore/eviction.h"

#include <algorithm>
#include <tuple>

namespace llmd::kvstore {

std::vector<std::size_t> lctru_victims(std::span<const EvictionCandidate> c, std::uint64_t need) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (!c[i].pinned) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    // Later chunks first within one use time: compare indexes reversed.
    return std::tuple(c[a].level, c[a].last_use, ~c[a].index, a) < std::tuple(c[b].level, c[b].last_use, ~c[b].index, b);
  });
  std::vector<std::size_t> out;
  std::uint64_t freed = 0;
  for (std::size_t i : order) {
    if (freed >= need) break;
    out.push_back(i);
    freed += c[i].bytes;
  }
  return out;
}

}  // namespace llmd::kvstore
