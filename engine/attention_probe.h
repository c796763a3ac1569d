// Observes how much attention each KV position of each sequence receives, cheaply: llama.cpp's
// eval callback hands over the softmaxed attention weights ("kq_soft_max-<layer>", only computed
// without flash attention) of a few sampled layers while a batch is decoded; the probe adds them
// up per sequence and position. The kvstore's `attention` policy turns that into chunk importance.
//
// Mapping a weight column to a position: the columns are KV cells; a query of sequence s at
// position p sees exactly the cells of s with positions <= p (the others are masked to weight 0),
// so the k-th column it sees is the k-th cell of s, which is position k while a sequence's cells
// lie in position order in the pool (how llama.cpp places them, and how restores place them). A
// weight that underflows to 0 or a sequence whose cells got out of order shifts the attribution of
// later columns by a cell: the scores are a heuristic for importance, never used for correctness.
//
// Thread-safety: used by the thread that decodes (the callback runs on it).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/types.h"

struct ggml_tensor;

namespace llmd::engine {

class Batch;

class AttentionProbe {
 public:
  // n_layer: the model's layers; a few of them are sampled (the middle and the last).
  AttentionProbe(std::uint32_t n_layer, std::uint32_t n_seq);

  void begin_decode(const Batch& batch);
  // The eval callback (ggml_backend_sched_eval_callback) with the probe as user data.
  static bool callback(ggml_tensor* t, bool ask, void* user_data);

  // Mean attention weight (summed over heads) position i of the sequence received per observed
  // query that could see it; empty if nothing was observed.
  std::vector<float> importance(SeqId seq) const;
  void reset(SeqId seq);

 private:
  bool wants(const ggml_tensor* t) const;
  void observe(const ggml_tensor* t);

  struct Stats {
    std::vector<double> received;       // by position
    std::vector<std::uint32_t> queries;  // observed (layer, query) pairs by query position
  };
  std::vector<std::uint32_t> layers_;
  std::vector<Stats> seqs_;
  const Batch* batch_ = nullptr;
  std::vector<std::int64_t> offset_;  // per sampled layer: batch index of the next ubatch's first token
};

}  // namespace llmd::engine
