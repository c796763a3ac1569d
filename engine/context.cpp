// llama_context wrapper (see context.h).
#include "engine/context.h"

#include <ggml-cpu.h>
#include <llama.h>
#include <sched.h>

#include <thread>

#include "engine/backend.h"
#include "engine/ggml_types.h"

namespace llmd::engine {
namespace {

Status validate(const Model& model, const ContextParams& p) {
  auto bad = [](const std::string& m) { return Error(Errc::invalid_argument, m); };
  if (p.n_slots < 1 || p.n_slots > kMaxSlots || p.n_slots > llama_max_parallel_sequences()) {
    return bad("slots must be between 1 and " + std::to_string(std::min<size_t>(kMaxSlots, llama_max_parallel_sequences())));
  }
  if (p.n_ctx < 16 || p.n_ctx > kMaxContext) {
    return bad("context size must be between 16 and " + std::to_string(kMaxContext) + " tokens");
  }
  if (p.n_batch < 1 || p.n_ubatch < 1) return bad("batch sizes must be at least 1");
  if (p.n_threads < 0 || p.n_threads > kMaxThreads || p.n_threads_batch < 0 || p.n_threads_batch > kMaxThreads) {
    return bad("threads must be between 0 (automatic) and " + std::to_string(kMaxThreads));
  }
  for (const auto* t : {&p.type_k, &p.type_v}) {
    auto type = ggml_type_from_name(*t);
    if (!type) return bad("KV cache type: " + type.error().message());
  }
  if (!model.info().supports_seq_state) {
    return Error(Errc::unsupported, "model architecture '" + model.info().architecture +
                                        "' has a KV cache llmd cannot manage per sequence (recurrent, hybrid or "
                                        "sliding-window attention)");
  }
  return {};
}

}  // namespace

int32_t default_thread_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int32_t>(hc) : 1;
}

Context::Context(const Model& model, llama_context* ctx) : model_(model), ctx_(ctx) {}

Context::~Context() {
  llama_free(ctx_);
  if (pool_ != nullptr) ggml_threadpool_free(pool_);
  if (pool_batch_ != nullptr) ggml_threadpool_free(pool_batch_);
}

Result<std::unique_ptr<Context>> Context::create(const Model& model, const ContextParams& params) {
  ensure_backend();
  LLMD_TRY_STATUS(validate(model, params));

  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = params.n_ctx;
  cp.n_seq_max = params.n_slots;
  cp.n_batch = std::min(params.n_batch, params.n_ctx);
  cp.n_ubatch = std::min(params.n_ubatch, cp.n_batch);
  cp.n_threads = params.n_threads > 0 ? params.n_threads : default_thread_count();
  cp.n_threads_batch = params.n_threads_batch > 0 ? params.n_threads_batch : cp.n_threads;
  cp.kv_unified = params.kv_unified;
  cp.no_perf = true;
  cp.type_k = static_cast<ggml_type>(*ggml_type_from_name(params.type_k));
  cp.type_v = static_cast<ggml_type>(*ggml_type_from_name(params.type_v));
  switch (params.flash_attn) {
    case FlashAttn::automatic: cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO; break;
    case FlashAttn::on: cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED; break;
    case FlashAttn::off: cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED; break;
  }

  std::unique_ptr<AttentionProbe> probe;
  if (params.observe_attention) {
    probe = std::make_unique<AttentionProbe>(static_cast<std::uint32_t>(model.info().n_layer), params.n_slots);
    cp.cb_eval = &AttentionProbe::callback;
    cp.cb_eval_user_data = probe.get();
  }

  clear_llama_errors();
  llama_context* raw = llama_init_from_model(model.handle(), cp);
  if (raw == nullptr) {
    std::string why = take_llama_errors();
    return Error(Errc::resource_exhausted, "cannot create a context of " + std::to_string(params.n_ctx) +
                                               " tokens and " + std::to_string(params.n_slots) + " slots" +
                                               (why.empty() ? std::string() : ": " + why));
  }
  std::unique_ptr<Context> ctx(new Context(model, raw));
  ctx->probe_ = std::move(probe);
  ctx->n_ctx_ = llama_n_ctx(raw);
  const auto train = static_cast<uint32_t>(std::max(0, model.info().n_ctx_train));
  ctx->max_seq_len_ = train > 0 ? std::min(ctx->n_ctx_, train) : ctx->n_ctx_;
  ctx->n_slots_ = llama_n_seq_max(raw);
  ctx->n_batch_ = llama_n_batch(raw);
  ctx->n_ubatch_ = llama_n_ubatch(raw);
  ctx->n_threads_ = llama_n_threads(raw);
  ctx->n_threads_batch_ = llama_n_threads_batch(raw);
  ggml_threadpool_params tp = ggml_threadpool_params_default(ctx->n_threads_);
  ggml_threadpool_params tpb = ggml_threadpool_params_default(ctx->n_threads_batch_);
  ctx->pool_ = ggml_threadpool_new(&tp);
  ctx->pool_batch_ = ggml_threadpool_new(&tpb);
  if (ctx->pool_ != nullptr && ctx->pool_batch_ != nullptr) {
    llama_attach_threadpool(raw, ctx->pool_, ctx->pool_batch_);
  }  // else: llama.cpp falls back to a pool per graph, slower but correct
  llama_set_abort_callback(
      raw, [](void* data) { return static_cast<std::atomic<bool>*>(data)->load(std::memory_order_relaxed); },
      &ctx->abort_);
  LLMD_TRY_STATUS(ctx->probe_layout());
  return ctx;
}

Status Context::probe_layout() {
  // The state format depends on resolved context settings (flash attention decides whether V is
  // transposed), which llama.cpp does not expose: decode one token and read its state back.
  const SeqId seq = static_cast<SeqId>(n_slots_ - 1);
  Batch batch(1);
  Token t = llama_vocab_bos(llama_model_get_vocab(model_.handle()));
  if (t < 0) t = 0;
  batch.add(t, 0, seq, false);
  LLMD_TRY_STATUS(decode(batch));
  auto bytes = seq_state_get(seq);
  seq_clear(seq);
  if (!bytes) return bytes.error();
  auto st = parse_seq_state(*bytes, seq_state_format());
  if (!st) return Error(Errc::unsupported, "this model's sequence state cannot be parsed: " + st.error().message());
  const int s = st->active_stream();
  if (s < 0 || st->streams[static_cast<size_t>(s)].cells.size() != 1) {
    return Error(Errc::unsupported, "the layout probe found an unexpected sequence state");
  }
  layout_ = layout_of(st->streams[static_cast<size_t>(s)], st->cell_ext_bytes);
  n_stream_ = static_cast<uint32_t>(st->streams.size());
  return {};
}

Status Context::decode(const Batch& batch) {
  if (batch.empty()) return {};
  for (SeqId s : batch.seqs()) {
    if (!valid_seq(s)) return Error(Errc::invalid_argument, "batch names sequence " + std::to_string(s) + " of " +
                                                                std::to_string(n_slots_) + " slots");
  }
  if (static_cast<uint32_t>(batch.size()) > n_batch_) {
    return Error(Errc::invalid_argument, "batch of " + std::to_string(batch.size()) + " tokens exceeds n_batch " +
                                             std::to_string(n_batch_));
  }
  llama_batch b{};
  b.n_tokens = batch.size();
  b.token = const_cast<Token*>(batch.tokens_.data());
  b.pos = const_cast<Pos*>(batch.pos_.data());
  b.n_seq_id = const_cast<int32_t*>(batch.n_seq_id_.data());
  b.seq_id = const_cast<SeqId**>(batch.seq_ptrs_.data());
  b.logits = const_cast<int8_t*>(batch.logits_.data());

  if (probe_) probe_->begin_decode(batch);
  clear_llama_errors();
  const int32_t rc = llama_decode(ctx_, b);
  abort_.store(false, std::memory_order_relaxed);
  if (rc == 0) return {};
  std::string why = take_llama_errors();
  if (!why.empty()) why = ": " + why;
  switch (rc) {
    case 1: return Error(Errc::resource_exhausted, "no free KV cells for a batch of " + std::to_string(batch.size()) + " tokens" + why);
    case 2: return Error(Errc::cancelled, "decode aborted" + why);
    case -1: return Error(Errc::invalid_argument, "llama.cpp rejected the batch" + why);
    default: return Error(Errc::internal, "llama_decode failed with " + std::to_string(rc) + why);
  }
}

const float* Context::logits(int32_t batch_index) const { return llama_get_logits_ith(ctx_, batch_index); }

void Context::seq_clear(SeqId seq) {
  llama_memory_seq_rm(llama_get_memory(ctx_), seq, -1, -1);
  if (probe_) probe_->reset(seq);
}

std::vector<float> Context::attention_importance(SeqId seq) const {
  return probe_ ? probe_->importance(seq) : std::vector<float>{};
}

bool Context::seq_truncate(SeqId seq, Pos from) {
  return llama_memory_seq_rm(llama_get_memory(ctx_), seq, from < 0 ? 0 : from, -1);
}

bool Context::can_shift() const { return llama_memory_can_shift(llama_get_memory(ctx_)); }

bool Context::seq_drop_range(SeqId seq, Pos p0, Pos p1) {
  llama_memory_t mem = llama_get_memory(ctx_);
  if (p0 < 0 || p1 <= p0 || !llama_memory_can_shift(mem)) return false;
  if (!llama_memory_seq_rm(mem, seq, p0, p1)) return false;
  llama_memory_seq_add(mem, seq, p1, -1, -(p1 - p0));
  if (probe_) probe_->reset(seq);
  return true;
}

void Context::seq_copy(SeqId from, SeqId to) {
  llama_memory_seq_rm(llama_get_memory(ctx_), to, -1, -1);
  llama_memory_seq_cp(llama_get_memory(ctx_), from, to, -1, -1);
}

bool Context::seq_share_prefix(SeqId from, SeqId to, Pos n) {
  llama_memory_t mem = llama_get_memory(ctx_);
  llama_memory_seq_rm(mem, to, -1, -1);
  if (probe_) probe_->reset(to);
  if (n_stream_ != 1 || n <= 0 || from == to) return false;
  if (llama_memory_seq_pos_min(mem, from) != 0 || llama_memory_seq_pos_max(mem, from) < n - 1) return false;
  llama_memory_seq_cp(mem, from, to, 0, n);
  if (llama_memory_seq_pos_min(mem, to) != 0 || llama_memory_seq_pos_max(mem, to) != n - 1) {
    llama_memory_seq_rm(mem, to, -1, -1);
    return false;
  }
  return true;
}

Pos Context::seq_pos_max(SeqId seq) const { return llama_memory_seq_pos_max(llama_get_memory(ctx_), seq); }
Pos Context::seq_pos_min(SeqId seq) const { return llama_memory_seq_pos_min(llama_get_memory(ctx_), seq); }

void Context::clear_all() {
  llama_memory_clear(llama_get_memory(ctx_), true);
  if (probe_) {
    for (std::uint32_t s = 0; s < n_slots_; ++s) probe_->reset(static_cast<SeqId>(s));
  }
}

Result<std::vector<uint8_t>> Context::seq_state_get(SeqId seq) const {
  if (!valid_seq(seq)) return Error(Errc::invalid_argument, "no sequence " + std::to_string(seq));
  clear_llama_errors();
  const size_t size = llama_state_seq_get_size_ext(ctx_, seq, 0);
  std::vector<uint8_t> buf(size);
  const size_t n = llama_state_seq_get_data_ext(ctx_, buf.data(), buf.size(), seq, 0);
  if (n != size || size == 0) {
    return Error(Errc::internal, "reading the state of sequence " + std::to_string(seq) + " failed: " + take_llama_errors());
  }
  return buf;
}

Status Context::seq_state_set(SeqId seq, std::span<const uint8_t> bytes) {
  if (!valid_seq(seq)) return Error(Errc::invalid_argument, "no sequence " + std::to_string(seq));
  auto st = parse_seq_state(bytes, seq_state_format());
  if (!st) return st.error();
  if (st->streams.size() != n_stream_) {
    return Error(Errc::invalid_argument, "sequence state has " + std::to_string(st->streams.size()) +
                                             " KV streams, this context " + std::to_string(n_stream_));
  }
  const int active = st->active_stream();
  size_t cells = 0;
  for (const auto& s : st->streams) {
    if (s.cells.empty()) continue;
    if (!(layout_of(s, st->cell_ext_bytes) == layout_)) {
      return Error(Errc::invalid_argument, "sequence state was made with a different model or KV settings");
    }
    for (const auto& c : s.cells) {
      if (c.seq_ids.size() != 1) return Error(Errc::corrupt, "sequence state has a cell shared by several sequences");
      if (c.pos < 0) return Error(Errc::corrupt, "sequence state has a negative position");
    }
    cells += s.cells.size();
  }
  if (active >= 0 && cells > n_ctx_) {
    return Error(Errc::resource_exhausted, "sequence state of " + std::to_string(cells) +
                                               " cells does not fit a context of " + std::to_string(n_ctx_));
  }
  if (active < 0) {  // an empty state: the sequence ends up empty
    seq_clear(seq);
    return {};
  }
  return set_validated(seq, bytes);
}

Status Context::seq_state_set_built(SeqId seq, std::span<const uint8_t> bytes) {
  if (!valid_seq(seq)) return Error(Errc::invalid_argument, "no sequence " + std::to_string(seq));
  return set_validated(seq, bytes);
}

Status Context::set_validated(SeqId seq, std::span<const uint8_t> bytes) {
  clear_llama_errors();
  const size_t n = llama_state_seq_set_data_ext(ctx_, bytes.data(), bytes.size(), seq, 0);
  if (n == 0) {
    std::string why = take_llama_errors();
    const bool no_room = why.find("failed to find") != std::string::npos;
    return Error(no_room ? Errc::resource_exhausted : Errc::internal,
                 "restoring sequence " + std::to_string(seq) + " failed" + (why.empty() ? "" : ": " + why));
  }
  return {};
}

}  // namespace llmd::engine
