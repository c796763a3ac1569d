// A batch of tokens for one llama_decode: any mix of sequences, each token with its position and
// whether its logits are wanted. Built by the caller, consumed by Context::decode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/types.h"

namespace llmd::engine {

class Batch {
 public:
  explicit Batch(int32_t capacity);

  // Appends a token; returns its index in the batch (the index to sample from if want_logits),
  // or -1 if the batch is full.
  int32_t add(Token token, Pos pos, SeqId seq, bool want_logits);
  void clear();

  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t capacity() const { return capacity_; }
  bool empty() const { return tokens_.empty(); }
  bool full() const { return size() >= capacity_; }

  const std::vector<Token>& tokens() const { return tokens_; }
  const std::vector<Pos>& positions() const { return pos_; }
  const std::vector<SeqId>& seqs() const { return seq_; }
  const std::vector<int8_t>& want_logits() const { return logits_; }

 private:
  friend class Context;
  int32_t capacity_;
  std::vector<Token> tokens_;
  std::vector<Pos> pos_;
  std::vector<SeqId> seq_;
  std::vector<int8_t> logits_;
  std::vector<int32_t> n_seq_id_;    // all 1: one sequence per token
  std::vector<SeqId*> seq_ptrs_;     // llama_batch.seq_id: pointers into seq_ (reserved, never moves)
};

}  // namespace llmd::engine
