// Batch building (see batch.h).
#include "engine/batch.h"

namespace llmd::engine {

Batch::Batch(int32_t capacity) : capacity_(capacity > 0 ? capacity : 1) {
  const auto n = static_cast<size_t>(capacity_);
  tokens_.reserve(n);
  pos_.reserve(n);
  seq_.reserve(n);
  logits_.reserve(n);
  n_seq_id_.reserve(n);
  seq_ptrs_.reserve(n);
}

int32_t Batch::add(Token token, Pos pos, SeqId seq, bool want_logits) {
  if (full()) return -1;
  tokens_.push_back(token);
  pos_.push_back(pos);
  seq_.push_back(seq);
  logits_.push_back(want_logits ? 1 : 0);
  n_seq_id_.push_back(1);
  seq_ptrs_.push_back(&seq_.back());  // seq_ has its full capacity reserved: no reallocation
  return size() - 1;
}

void Batch::clear() {
  tokens_.clear();
  pos_.clear();
  seq_.clear();
  logits_.clear();
  n_seq_id_.clear();
  seq_ptrs_.clear();
}

}  // namespace llmd::engine
