// One llama.cpp context: n_slots sequences ("slots") sharing one unified pool of KV cells, decoded
// together in batches. Also the per-sequence state primitives the kvstore builds on.
//
// Thread-safety: a Context is used by one thread at a time (in the daemon: the engine thread).
// request_abort() alone may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/attention_probe.h"
#include "engine/batch.h"
#include "engine/model.h"
#include "engine/seq_state.h"
#include "engine/types.h"

struct llama_context;
struct ggml_threadpool;

namespace llmd::engine {

enum class FlashAttn { automatic, on, off };

struct ContextParams {
  std::uint32_t n_ctx = 4096;     // KV cells shared by all slots (one sequence may use them all)
  std::uint32_t n_slots = 4;      // sequences that can be resident at once (n_seq_max)
  std::uint32_t n_batch = 2048;   // most tokens one decode() accepts (clamped to n_ctx)
  std::uint32_t n_ubatch = 512;   // physical micro-batch
  std::int32_t n_threads = 0;     // decode threads; 0 = one per online CPU
  std::int32_t n_threads_batch = 0;  // prompt threads; 0 = n_threads
  FlashAttn flash_attn = FlashAttn::automatic;
  std::string type_k = "f16";     // KV cache types (ggml names)
  std::string type_v = "f16";
  bool kv_unified = true;         // one cell pool shared by all sequences
  // Observe the attention each position receives (attention_probe.h). Costs a callback per
  // sampled layer and decode; sees nothing with flash attention on.
  bool observe_attention = false;
};

// Limits on ContextParams (invalid_argument beyond them).
inline constexpr std::uint32_t kMaxSlots = 256;
inline constexpr std::uint32_t kMaxContext = 1u << 20;
inline constexpr std::int32_t kMaxThreads = 512;

class Context {
 public:
  // Creates the context and probes its KV layout (one token is decoded into the last slot and
  // removed again). Errors: invalid_argument (params), unsupported (the model's KV cannot be
  // handled as per-sequence rows: recurrent, hybrid, sliding-window models), resource_exhausted
  // (llama.cpp could not allocate it).
  static Result<std::unique_ptr<Context>> create(const Model& model, const ContextParams& params);

  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Runs the batch. Each sequence's positions must continue its stored ones. Errors:
  // resource_exhausted (no free KV cells; nothing of the batch is kept), cancelled (after
  // request_abort(); what was processed stays, see seq_pos_max), invalid_argument (bad batch),
  // internal.
  Status decode(const Batch& batch);

  // Logits of the token at batch index i of the last decode (it must have asked for logits).
  const float* logits(std::int32_t batch_index) const;

  // Makes the next or current decode() stop early; cleared when decode() returns.
  void request_abort() { abort_.store(true, std::memory_order_relaxed); }

  // Per-position attention importance of a sequence since it was last cleared (empty unless
  // observe_attention and something was observed); see AttentionProbe::importance.
  std::vector<float> attention_importance(SeqId seq) const;

  // Sequence (slot) management.
  void seq_clear(SeqId seq);                 // forget all of the sequence's cells (and its attention)
  bool seq_truncate(SeqId seq, Pos from);    // forget positions >= from
  void seq_copy(SeqId from, SeqId to);       // to shares from's cells (no copy of data)
  // `to` forgets its cells and shares from's positions [0, n) (no copy of data: the cells gain a
  // sequence). False, with `to` left empty, where the pool is not one unified stream (a copy
  // across streams would copy whole buffers) or `from` does not hold positions 0 .. n-1.
  bool seq_share_prefix(SeqId from, SeqId to, Pos n);
  // Forgets positions [p0, p1) and moves the later ones down by p1 - p0 (llama.cpp's K-shift:
  // RoPE re-applied to the keys at the next decode, so the state must not be read before one).
  // The sequence's attention observations are reset. False (nothing changed) where the model's
  // memory cannot shift or the range is empty.
  bool seq_drop_range(SeqId seq, Pos p0, Pos p1);
  bool can_shift() const;
  Pos seq_pos_max(SeqId seq) const;          // last stored position, -1 if empty
  Pos seq_pos_min(SeqId seq) const;          // first stored position, -1 if empty
  void clear_all();                          // forget everything in every slot

  // The sequence's KV state in llama.cpp's format (see seq_state.h).
  Result<std::vector<std::uint8_t>> seq_state_get(SeqId seq) const;
  // Replaces the sequence's KV with the given state. The bytes are validated against this
  // context's layout first (corrupt / invalid_argument), so bad input never reaches llama.cpp.
  // resource_exhausted if there are not enough free cells.
  Status seq_state_set(SeqId seq, std::span<const std::uint8_t> bytes);

  // Installs state bytes built for this context by SeqStateWriter over its kv_layout(), n_stream()
  // and stream_of(seq) from checked chunks (the kvstore's restore): no second validation pass.
  // resource_exhausted if there are not enough free cells.
  Status seq_state_set_built(SeqId seq, std::span<const uint8_t> bytes);
  std::uint32_t n_stream() const { return n_stream_; }
  std::uint32_t stream_of(SeqId seq) const { return n_stream_ == 1 ? 0 : static_cast<std::uint32_t>(seq); }

  const KvLayout& kv_layout() const { return layout_; }
  SeqStateFormat seq_state_format() const { return {model_.info().seq_state_cell_ext_bytes}; }
  const Model& model() const { return model_; }

  std::uint32_t n_ctx() const { return n_ctx_; }
  // The longest one sequence may grow: the KV pool, or the model's training context if smaller
  // (positions beyond it are outside what the model learned).
  std::uint32_t max_seq_len() const { return max_seq_len_; }
  std::uint32_t n_slots() const { return n_slots_; }
  std::uint32_t n_batch() const { return n_batch_; }
  std::uint32_t n_ubatch() const { return n_ubatch_; }
  std::int32_t n_threads() const { return n_threads_; }
  std::int32_t n_threads_batch() const { return n_threads_batch_; }
  bool valid_seq(SeqId seq) const { return seq >= 0 && static_cast<std::uint32_t>(seq) < n_slots_; }

  llama_context* handle() const { return ctx_; }  // engine-internal

 private:
  Context(const Model& model, llama_context* ctx);
  Status probe_layout();
  Status set_validated(SeqId seq, std::span<const uint8_t> bytes);

  const Model& model_;
  llama_context* ctx_;
  // Persistent worker pools, one for single-token decode and one for batches (llama.cpp otherwise
  // builds a throw-away pool per graph): +2-3% decode tokens/s, prefill unchanged (measured on
  // the smollm2-135m shape, 2 threads; sharing one pool for both made prefill 5% slower).
  std::unique_ptr<AttentionProbe> probe_;  // observe_attention only
  ggml_threadpool* pool_ = nullptr;
  ggml_threadpool* pool_batch_ = nullptr;
  std::atomic<bool> abort_{false};
  KvLayout layout_;
  std::uint32_t n_ctx_ = 0, n_slots_ = 0, n_batch_ = 0, n_ubatch_ = 0, n_stream_ = 0, max_seq_len_ = 0;
  std::int32_t n_threads_ = 0, n_threads_batch_ = 0;
};

// Resolves n_threads = 0 to the number of CPUs this process may run on.
std::int32_t default_thread_count();

}  // namespace llmd::engine
