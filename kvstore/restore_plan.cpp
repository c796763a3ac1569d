// Restore planning (see restore_plan.h).
#include "kvstore/restore_plan.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace llmd::kvstore {
namespace {

void smooth(double& avg, double ms, std::size_t cells) {
  if (cells == 0) return;
  const double per = ms / static_cast<double>(cells);
  avg = avg > 0.0 ? 0.7 * avg + 0.3 * per : per;
}

}  // namespace

std::uint64_t token_prefix_hash(std::uint64_t seed, std::span<const engine::Token> tokens) {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), seed);
}

void RestoreCostModel::report_recompute(std::size_t tokens, double ms) {
  if (tokens == 0 || !(ms > 0.0)) return;
  MutexLock lock(mu_);
  smooth(costs_.recompute_ms, ms, tokens);
}

void RestoreCostModel::learn_load(const LoadCostSample& s) {
  MutexLock lock(mu_);
  smooth(costs_.ram_ms, s.ram_ms, s.ram_cells);
  smooth(costs_.disk_ms, s.disk_ms, s.disk_cells);
}

RestoreCosts RestoreCostModel::costs() const {
  MutexLock lock(mu_);
  return costs_;
}

ChunkMatch match_chunks(std::span<const ChunkEntry> chunks, std::span<const engine::Token> history,
                        std::uint32_t chunk_tokens, std::uint64_t seed) {
  ChunkMatch m;
  const std::size_t C = chunk_tokens;
  std::uint64_t h = seed;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const ChunkEntry& c = chunks[i];
    if (!c.present() || i * C + c.n_cells > history.size()) break;
    h = token_prefix_hash(h, history.subspan(i * C, c.n_cells));
    if (h != c.prefix_hash) break;
    m.hashes.push_back(h);
    m.matched = i + 1;
    if (c.n_cells < C) break;  // a partial chunk is the last one
  }
  return m;
}

std::size_t cheapest_prefix(std::span<const ChunkEntry> chunks, std::size_t matched, std::size_t history,
                            const RestoreCosts& k) {
  if (k.recompute_ms <= 0.0) return matched;  // nothing measured yet: loading is the safe bet
  // Total time if the first n chunks are loaded and the rest of the history is recomputed.
  double best = static_cast<double>(history) * k.recompute_ms, load = 0.0;
  std::size_t best_n = 0, cells = 0;
  for (std::size_t i = 0; i < matched; ++i) {
    load += static_cast<double>(chunks[i].n_cells) * (chunks[i].ram ? k.ram_ms : k.disk_ms);
    cells += chunks[i].n_cells;
    const double total = load + static_cast<double>(history - cells) * k.recompute_ms;
    if (total <= best) {
      best = total;
      best_n = i + 1;
    }
  }
  return best_n;
}

}  // namespace llmd::kvstore
