// Embeddings on a llama_context of their own (see embedder.h).
#include "engine/embedder.h"

#include <ggml-cpu.h>
#include <llama.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "engine/backend.h"
#include "engine/context.h"

namespace llmd::engine {
namespace {

// The pooling the model's GGUF names (`<arch>.pooling_type`), LLAMA_POOLING_TYPE_NONE where it
// names none: llama.cpp reads the same key (hparams.pooling_type) and offers no getter for it
// short of creating a context.
enum llama_pooling_type model_pooling_type(const Model& model) {
  const std::string key = model.info().architecture + ".pooling_type";
  char buf[32] = {};
  const int32_t n = llama_model_meta_val_str(model.handle(), key.c_str(), buf, sizeof buf);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof buf) return LLAMA_POOLING_TYPE_NONE;
  const long v = std::strtol(buf, nullptr, 10);
  switch (v) {
    case LLAMA_POOLING_TYPE_MEAN: return LLAMA_POOLING_TYPE_MEAN;
    case LLAMA_POOLING_TYPE_CLS: return LLAMA_POOLING_TYPE_CLS;
    case LLAMA_POOLING_TYPE_LAST: return LLAMA_POOLING_TYPE_LAST;
    case LLAMA_POOLING_TYPE_RANK: return LLAMA_POOLING_TYPE_RANK;
    default: return LLAMA_POOLING_TYPE_NONE;
  }
}

// L2 normalization, summed in double as llama.cpp's common_embd_normalize(…, 2) does; a zero
// vector stays zero.
void normalize_into(const float* in, std::size_t n, std::vector<float>& out) {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(in[i]) * in[i];
  const double norm = sum > 0.0 ? 1.0 / std::sqrt(sum) : 0.0;
  out.resize(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i] * norm);
}

}  // namespace

std::uint64_t embedder_bytes(const ModelInfo& model, std::uint32_t n_ctx) {
  const std::uint64_t n = n_ctx;
  const std::uint64_t per_token = 4ull * static_cast<std::uint64_t>(std::max(0, model.n_vocab)) + 2 * model.kv_bytes_per_token_f16;
  return n * per_token + 4ull * static_cast<std::uint64_t>(std::max(1, model.n_head)) * n * n;
}

std::uint32_t embedding_context_size(const ModelInfo& model, std::uint32_t limit, std::uint64_t budget_bytes) {
  constexpr std::uint32_t kStep = 256;
  if (limit <= kStep || embedder_bytes(model, limit) <= budget_bytes) return limit;
  std::uint32_t n = limit / kStep * kStep;
  while (n > kStep && embedder_bytes(model, n) > budget_bytes) n -= kStep;
  return n;
}

std::string model_pooling(const Model& model) {
  switch (model_pooling_type(model)) {
    case LLAMA_POOLING_TYPE_MEAN: return "mean";
    case LLAMA_POOLING_TYPE_CLS: return "cls";
    case LLAMA_POOLING_TYPE_LAST: return "last";
    case LLAMA_POOLING_TYPE_RANK: return "rank";
    default: return "";
  }
}

std::string_view pooling_name(Pooling pooling) {
  switch (pooling) {
    case Pooling::mean: return "mean";
    case Pooling::cls: return "cls";
    case Pooling::last: return "last";
  }
  return "mean";
}

Embedder::~Embedder() {
  llama_free(ctx_);
  if (pool_ != nullptr) ggml_threadpool_free(pool_);
}

Result<std::unique_ptr<Embedder>> Embedder::create(const Model& model, const EmbedderParams& params) {
  ensure_backend();
  auto bad = [](const std::string& m) { return Error(Errc::invalid_argument, m); };
  if (params.n_ctx < 16 || params.n_ctx > kMaxContext) {
    return bad("embedding context size must be between 16 and " + std::to_string(kMaxContext) + " tokens");
  }
  const auto max_seqs = static_cast<std::uint32_t>(std::min<size_t>(kMaxSlots, llama_max_parallel_sequences()));
  if (params.n_seq_max < 1 || params.n_seq_max > max_seqs) {
    return bad("embedding sequences per decode must be between 1 and " + std::to_string(max_seqs));
  }
  if (params.n_threads < 0 || params.n_threads > kMaxThreads) {
    return bad("threads must be between 0 (automatic) and " + std::to_string(kMaxThreads));
  }

  enum llama_pooling_type type = model_pooling_type(model);
  if (type == LLAMA_POOLING_TYPE_RANK) {
    return Error(Errc::unsupported, "this model is a reranker (pooling 'rank'): it scores pairs of texts and gives "
                                    "no embedding vectors");
  }
  const bool own = type != LLAMA_POOLING_TYPE_NONE;
  // As llama-server with --embeddings on a model that names no pooling, but mean rather than
  // refusing: per-token vectors are not what /v1/embeddings answers.
  if (!own) type = LLAMA_POOLING_TYPE_MEAN;

  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = params.n_ctx;
  cp.n_batch = params.n_ctx;
  cp.n_ubatch = params.n_ctx;  // a sequence is pooled within one ubatch
  cp.n_seq_max = params.n_seq_max;
  cp.kv_unified = true;  // the group's inputs share the n_ctx cells
  cp.embeddings = true;
  cp.pooling_type = type;
  cp.n_threads = params.n_threads > 0 ? params.n_threads : default_thread_count();
  cp.n_threads_batch = cp.n_threads;
  cp.no_perf = true;
  // Full-precision, batch-independent attention (see embedder.h).
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;

  clear_llama_errors();
  llama_context* raw = llama_init_from_model(model.handle(), cp);
  if (raw == nullptr) {
    const std::string why = take_llama_errors();
    return Error(Errc::resource_exhausted, "cannot create an embeddings context of " + std::to_string(params.n_ctx) +
                                               " tokens" + (why.empty() ? std::string() : ": " + why));
  }
  std::unique_ptr<Embedder> e(new Embedder(model, raw));
  e->n_ctx_ = std::min({params.n_ctx, llama_n_batch(raw), llama_n_ubatch(raw)});
  e->n_seq_max_ = std::min(params.n_seq_max, llama_n_seq_max(raw));
  e->n_group_tokens_ = std::max<std::uint32_t>(1, std::min(params.n_group_tokens, e->n_ctx_));
  e->n_threads_ = llama_n_threads_batch(raw);
  e->n_embd_ = llama_model_n_embd_out(model.handle());
  e->n_vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model.handle()));
  e->model_pooling_ = own;
  switch (llama_pooling_type(raw)) {
    case LLAMA_POOLING_TYPE_CLS: e->pooling_ = Pooling::cls; break;
    case LLAMA_POOLING_TYPE_LAST: e->pooling_ = Pooling::last; break;
    default: e->pooling_ = Pooling::mean; break;
  }
  // One persistent pool (llama.cpp otherwise builds a throw-away pool per graph).
  ggml_threadpool_params tp = ggml_threadpool_params_default(e->n_threads_);
  e->pool_ = ggml_threadpool_new(&tp);
  if (e->pool_ != nullptr) llama_attach_threadpool(raw, e->pool_, e->pool_);
  llama_set_abort_callback(
      raw,
      [](void* data) {
        const auto* cancel = static_cast<Embedder*>(data)->cancel_;
        return cancel != nullptr && cancel->load(std::memory_order_relaxed);
      },
      e.get());
  return e;
}

Result<std::vector<std::vector<float>>> Embedder::embed(std::span<const std::vector<Token>> inputs,
                                                        const std::atomic<bool>* cancel) {
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& in = inputs[i];
    const std::string which = inputs.size() == 1 ? std::string("the input") : "input " + std::to_string(i);
    if (in.empty()) return Error(Errc::invalid_argument, which + " is empty").with_param("input");
    if (in.size() > n_ctx_) {
      return Error(Errc::invalid_argument, "context_length_exceeded: " + which + " has " + std::to_string(in.size()) +
                                               " tokens, more than the " + std::to_string(n_ctx_) +
                                               " an embedding input may have")
          .with_limit("input", n_ctx_, in.size())
          .with_reason(Reason::context_length_exceeded);
    }
    for (Token t : in) {
      if (t < 0 || t >= n_vocab_) {
        return Error(Errc::invalid_argument, which + " has token id " + std::to_string(t) + ", outside the vocabulary (0.." +
                                                 std::to_string(n_vocab_ - 1) + ")")
            .with_param("input");
      }
    }
  }
  cancel_ = cancel;
  std::vector<std::vector<float>> out;
  out.reserve(inputs.size());
  Status st;
  // In order, as many inputs per decode as fit: the vectors come out in the inputs' order.
  for (std::size_t first = 0; first < inputs.size() && st;) {
    std::size_t n = 0, tokens = 0;
    while (first + n < inputs.size() && n < n_seq_max_ && (n == 0 || tokens + inputs[first + n].size() <= n_group_tokens_)) {
      tokens += inputs[first + n].size();
      ++n;
    }
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      st = Error(Errc::cancelled, "the embedding request was cancelled");
      break;
    }
    st = decode_group(inputs.subspan(first, n), out);
    first += n;
  }
  cancel_ = nullptr;
  if (!st) return st.error();
  return out;
}

Status Embedder::decode_group(std::span<const std::vector<Token>> group, std::vector<std::vector<float>>& out) {
  std::size_t total = 0;
  for (const auto& in : group) total += in.size();
  std::vector<llama_token> tokens;
  std::vector<llama_pos> pos;
  std::vector<int32_t> n_seq_id(total, 1);
  std::vector<llama_seq_id> seq_ids;
  std::vector<int8_t> logits(total, 1);  // pooling needs every token output
  tokens.reserve(total);
  pos.reserve(total);
  seq_ids.reserve(total);
  for (std::size_t s = 0; s < group.size(); ++s) {
    for (std::size_t i = 0; i < group[s].size(); ++i) {
      tokens.push_back(group[s][i]);
      pos.push_back(static_cast<llama_pos>(i));
      seq_ids.push_back(static_cast<llama_seq_id>(s));
    }
  }
  std::vector<llama_seq_id*> seq_ptrs(total);
  for (std::size_t i = 0; i < total; ++i) seq_ptrs[i] = &seq_ids[i];
  llama_batch b{};
  b.n_tokens = static_cast<int32_t>(total);
  b.token = tokens.data();
  b.pos = pos.data();
  b.n_seq_id = n_seq_id.data();
  b.seq_id = seq_ptrs.data();
  b.logits = logits.data();

  clear_llama_errors();
  const int32_t rc = llama_decode(ctx_, b);
  Status st;
  if (rc == 2) {
    st = Error(Errc::cancelled, "the embedding request was cancelled");
  } else if (rc != 0) {
    const std::string why = take_llama_errors();
    st = Error(Errc::internal, "llama_decode of " + std::to_string(total) + " embedding tokens failed with " +
                                   std::to_string(rc) + (why.empty() ? std::string() : ": " + why));
  } else {
    for (std::size_t s = 0; s < group.size(); ++s) {
      const float* v = llama_get_embeddings_seq(ctx_, static_cast<llama_seq_id>(s));
      if (v == nullptr) {
        st = Error(Errc::internal, "llama.cpp gave no pooled embedding for a sequence");
        break;
      }
      out.emplace_back();
      normalize_into(v, static_cast<std::size_t>(n_embd_), out.back());
    }
  }
  // Nothing is kept between decodes: the next group starts from position 0 in an empty pool.
  if (llama_memory_t mem = llama_get_memory(ctx_); mem != nullptr) llama_memory_clear(mem, true);
  return st;
}

}  // namespace llmd::engine
