// The chunk store's queue of work for its own thread: write-backs (each holding a whole sequence
// state: ~47 MB at 2k tokens of a 135M model), session drops and retains, in order.
//
// Byte bound: the write-backs queued take bytes() (their state, tokens and attention); shed()
// drops the oldest write-backs of sessions not in use until they take at most the bound. A
// dropped write-back loses nothing but time: the session's tokens (the SessionStore's) stay the
// truth, and the positions its chunks would have held are recomputed on its next turn. The
// write-backs of sessions in use (a turn running, a restore or audit waiting for them) are never
// dropped, so the queue can hold more than the bound by those alone.
//
// Thread-safety: none of its own; the ChunkStore holds it under its mutex (ChunkStore::mu_).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/types.h"

namespace llmd::kvstore {

struct StoreOp {
  enum class Kind { write_back, drop, retain, drop_from, share } kind = Kind::write_back;
  std::string session;
  std::vector<engine::Token> tokens;    // write_back
  std::vector<std::uint8_t> state;      // write_back
  std::vector<float> attention;         // write_back
  std::set<std::string> keep;           // retain
  std::uint32_t from = 0;               // drop_from
  std::string source;                   // share: the key whose chunks `session` takes references to
  std::optional<std::uint32_t> uid;     // write_back: the key's owner, if known
  bool anonymous = false;               // write_back: a prefix entry
  std::uint64_t lineage = 0;            // write_back: what the KV is (ChunkStore::lineage_seed)

  // What a queued write-back holds in memory (0 for the other kinds).
  std::uint64_t bytes() const;
};

class StoreQueue {
 public:
  void push(StoreOp op);
  std::optional<StoreOp> pop();  // the oldest; nullopt when empty
  bool empty() const { return ops_.empty(); }
  std::size_t size() const { return ops_.size(); }
  std::uint64_t bytes() const { return bytes_; }  // of the write-backs queued

  // Drops the oldest write-backs of sessions not in `in_use`, until the queued write-backs take
  // at most `bound` bytes (or none is left to drop). Returns the sessions of the dropped
  // write-backs, one entry per write-back, oldest first.
  std::vector<std::string> shed(std::uint64_t bound, const std::set<std::string>& in_use);

 private:
  std::deque<StoreOp> ops_;
  std::uint64_t bytes_ = 0;
};

}  // namespace llmd::kvstore
