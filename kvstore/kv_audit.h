// The KV audit: is every cache of a session's KV the KV of the tokens it claims? A session's
// history is recomputed from nothing (the engine does that, in a scratch slot) and every stored
// chunk copy (T1 and T2) and the KV resident in the session's slot are compared with it, value by
// value, with a tolerance: recomputing the same tokens in other batch splits or at other cells
// changes values by float rounding only (< 0.1 on the test models), while KV of other tokens or
// positions is off by the size of the values themselves (~100x more), and a lossy codec by its
// quantization step. A chunk made for another history (its prefix hash does not match the
// session's tokens) is not compared: restore would never use it ("stale").
//
// Used by the tests (chaos, the slot-eviction regression) through `POST /v1/sessions/{id}/audit`
// and `llmctl sessions audit`.
//
// Pure code over the engine's layout types; no llama.h, no I/O. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/seq_state.h"
#include "engine/types.h"
#include "kvstore/chunk.h"

namespace llmd::kvstore {

// How far stored KV may be from the recomputed KV, by the codec it was stored with. Two measures,
// both must hold: every value within abs + max_rel x (the largest magnitude of the recomputed
// values of that layer's K or V rows), and rms(stored - recomputed) / rms(recomputed) <= rms for
// each layer's K and V. Measured on stories260K (f16 KV, chunks of 16): recomputing in another
// batch split moves values by <= 0.125 (of up to ~30) and the rms ratio by <= 0.006; the KV of a
// history whose first token differed (the slot-eviction bug) by >= 0.43 and >= 0.04; KV of other
// tokens by ~10 and 0.15-0.26. Lossy codecs add their quantization step, and so does all KV
// computed after a lossy restore: a chunk (and the resident KV) is judged by the limits of the
// lossiest codec of the chunks before it and its own. On stories260K q8_0 moves the rms ratio by
// <= 0.03 and q4_0 by up to 0.35 (max differences of 20% of the largest value): the audit of a
// q4_0 session finds only gross errors, which is what the codec allows (issue 18's per-channel
// codecs are the remedy).
struct AuditTolerance {
  struct Limits {
    double max_rel = 0;
    double rms = 0;
  };
  double abs = 0.1;
  Limits exact{0.01, 0.02};
  Limits q8_0{0.06, 0.08};
  Limits q4_0{0.5, 0.6};
  Limits kivi8{0.06, 0.08};
  Limits kivi4{0.5, 0.6};
  Limits kivi2{1.0, 1.0};
  const Limits& of(Codec codec) const;
};

// One copy of a stored chunk, as the store holds it.
struct AuditCopy {
  std::string tier;                // "ram" | "disk"
  std::vector<std::uint8_t> blob;  // the chunk blob
  std::string error;               // non-empty: the copy could not be read or checked (blob empty)
};

struct AuditChunkInput {
  std::uint32_t index = 0;
  std::uint32_t n_cells = 0;
  std::uint64_t prefix_hash = 0;  // what the index says the chunk was made for
  std::vector<AuditCopy> copies;
};

struct AuditResidentInput {
  std::uint32_t slot = 0;
  std::vector<engine::Token> tokens;     // what the engine's bookkeeping says the slot holds
  std::vector<std::uint8_t> state;       // what it holds (llama.cpp's sequence state)
};

// The comparison of one set of cells with the recomputed KV.
struct AuditCompare {
  bool ok = false;
  std::string error;         // why not ok, in words
  std::uint32_t cells = 0;   // cells compared
  double max_abs_diff = 0;   // largest |stored - recomputed|
  double max_excess = 0;     // largest |stored - recomputed| / its tolerance (ok needs <= 1)
  double max_abs = 0;        // largest |recomputed| seen
  double rms_ratio = 0;      // largest, over layers' K and V, of rms(stored - recomputed) / rms(recomputed)
                             // (ok needs <= the codec's limit)
};

struct AuditCopyReport {
  std::string tier;
  Codec codec = Codec::exact;
  AuditCompare compare;
};

struct AuditChunkReport {
  std::uint32_t index = 0;
  std::uint32_t first_pos = 0, n_cells = 0;
  bool stale = false;  // made for another history: never used for this one, not compared
  std::vector<AuditCopyReport> copies;
};

struct AuditResidentReport {
  std::uint32_t slot = 0;
  std::uint32_t tokens = 0;   // tokens the bookkeeping claims
  std::uint32_t matched = 0;  // of those, the prefix equal to the session's tokens (compared)
  AuditCompare compare;
};

struct AuditReport {
  std::uint32_t tokens = 0;  // the session's history
  std::vector<AuditChunkReport> chunks;
  std::optional<AuditResidentReport> resident;
  std::uint32_t checked = 0;  // copies and resident states compared
  std::uint32_t failed = 0;   // of those, not ok
  double max_abs_diff = 0;    // over everything compared and ok, for calibration
  bool ok() const { return failed == 0; }
};

// Compares. `reference` is the recomputed state of `tokens` (every position 0..n-1, any cell
// order); chunk i covers positions [i*chunk_tokens, i*chunk_tokens + n_cells) and is usable for
// `tokens` when its prefix hash is the chain of token_prefix_hash from `chain_seed`
// (ChunkStore::chain_seed). Errors: corrupt or invalid_argument if the reference itself is not a
// state of `tokens` under `layout` (then nothing can be judged).
Result<AuditReport> audit_kv(const engine::KvLayout& layout, std::span<const engine::Token> tokens,
                             std::span<const std::uint8_t> reference, std::uint32_t chunk_tokens, std::uint64_t chain_seed,
                             const std::vector<AuditChunkInput>& chunks,
                             const std::optional<AuditResidentInput>& resident, const AuditTolerance& tolerance = {});

}  // namespace llmd::kvstore
