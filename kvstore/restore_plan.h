// Restore planning: which of a session's chunks a restore loads and which positions it leaves to
// be recomputed, by what restoring costs.
//
//   match_chunks()   the chunks whose token prefix matches the history being restored, by the
//                    index's prefix hashes (the blob's own header is checked again when decoded)
//   RestoreCostModel the measured costs (ms per cell of a T1 or T2 load, ms per recomputed token),
//                    smoothed
//   cheapest_prefix  how many of the matched chunks to load so that loading them and recomputing
//                    the rest takes least time (a slow disk, a fast accelerator: recompute more)
//
// Thread-safety: match_chunks and cheapest_prefix are pure. RestoreCostModel has its own mutex:
// loads (the engine's loader thread) and the engine (report_recompute) teach it; anyone reads it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/mutex.h"
#include "engine/types.h"
#include "kvstore/chunk_tiers.h"

namespace llmd::kvstore {

// Measured costs, ms per token (cell), smoothed: restoring a chunk's cells from T1 or T2 (read,
// check, decode) and recomputing a token (reported by the engine). 0: not measured yet.
struct RestoreCosts {
  double ram_ms = 0, disk_ms = 0, recompute_ms = 0;
};

// What one load took, by tier.
struct LoadCostSample {
  double ram_ms = 0, disk_ms = 0;
  std::size_t ram_cells = 0, disk_cells = 0;
};

class RestoreCostModel {
 public:
  // The engine recomputed `tokens` of history in `ms`.
  void report_recompute(std::size_t tokens, double ms) LLMD_EXCLUDES(mu_);
  void learn_load(const LoadCostSample& sample) LLMD_EXCLUDES(mu_);
  RestoreCosts costs() const LLMD_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  RestoreCosts costs_ LLMD_GUARDED_BY(mu_);
};

// Chained hash of tokens[0, n): a chunk's identity (plus its codec). Chunk i of a session has
// prefix hash h_i = token_prefix_hash(h_{i-1}, chunk i's tokens), h_{-1} = ChunkStore::chain_seed().
std::uint64_t token_prefix_hash(std::uint64_t seed, std::span<const engine::Token> tokens);

struct ChunkMatch {
  std::size_t matched = 0;             // leading chunks whose prefix hash is the history's
  std::vector<std::uint64_t> hashes;   // the history's prefix hash at the end of each matched chunk
};

// The leading chunks of `chunks` (a session's, by index) that hold the first positions of
// `history`: present, within the history, and with the history's prefix hash (the chain from
// `seed`, chunk_tokens positions a chunk). A partial chunk ends the match.
ChunkMatch match_chunks(std::span<const ChunkEntry> chunks, std::span<const engine::Token> history,
                        std::uint32_t chunk_tokens, std::uint64_t seed);

// How many of the first `matched` chunks to load so that loading them (at the cost of the tier
// each is in, RAM first) and recomputing the rest of a `history`-token history takes least time.
// With no recompute cost measured yet, all of them; a tier's cost not measured yet counts as
// free, so that it gets measured.
std::size_t cheapest_prefix(std::span<const ChunkEntry> chunks, std::size_t matched, std::size_t history,
                            const RestoreCosts& costs);

}  // namespace llmd::kvstore
