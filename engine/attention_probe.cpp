// Attention observation through llama.cpp's eval callback (see attention_probe.h).
#include "engine/attention_probe.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "engine/batch.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace llmd::engine {
namespace {

constexpr const char* kPrefix = "kq_soft_max-";

// The layer of a "kq_soft_max-<layer>" tensor, or -1.
int layer_of(const ggml_tensor* t) {
  const std::size_t n = std::strlen(kPrefix);
  if (std::strncmp(t->name, kPrefix, n) != 0) return -1;
  int layer = 0;
  for (const char* p = t->name + n; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9') return -1;
    layer = layer * 10 + (*p - '0');
  }
  return layer;
}

}  // namespace

AttentionProbe::AttentionProbe(std::uint32_t n_layer, std::uint32_t n_seq) : seqs_(n_seq) {
  if (n_layer > 0) {
    layers_.push_back(n_layer / 2);
    if (n_layer - 1 != n_layer / 2) layers_.push_back(n_layer - 1);
  }
  offset_.assign(layers_.size(), 0);
}

void AttentionProbe::begin_decode(const Batch& batch) {
  batch_ = &batch;
  std::fill(offset_.begin(), offset_.end(), 0);
}

bool AttentionProbe::wants(const ggml_tensor* t) const {
  const int layer = layer_of(t);
  return layer >= 0 && std::find(layers_.begin(), layers_.end(), static_cast<std::uint32_t>(layer)) != layers_.end();
}

bool AttentionProbe::callback(ggml_tensor* t, bool ask, void* user_data) {
  auto* self = static_cast<AttentionProbe*>(user_data);
  if (ask) return self->wants(t);
  self->observe(t);
  return true;  // go on computing
}

void AttentionProbe::observe(const ggml_tensor* t) {
  if (batch_ == nullptr || t->type != GGML_TYPE_F32 || t->buffer == nullptr || !ggml_backend_buffer_is_host(t->buffer)) {
    return;  // weights on a device are not copied back: the policy falls back to positions
  }
  const int layer = layer_of(t);
  const auto slot = static_cast<std::size_t>(std::find(layers_.begin(), layers_.end(), static_cast<std::uint32_t>(layer)) -
                                             layers_.begin());
  if (slot >= layers_.size()) return;
  const std::int64_t n_kv = t->ne[0], n_tok = t->ne[1], n_head = t->ne[2];
  const auto& seqs = batch_->seqs();
  const auto& pos = batch_->positions();
  for (std::int64_t q = 0; q < n_tok; ++q) {
    const std::int64_t b = offset_[slot] + q;
    if (b >= static_cast<std::int64_t>(seqs.size())) break;
    const SeqId s = seqs[static_cast<std::size_t>(b)];
    if (s < 0 || static_cast<std::size_t>(s) >= seqs_.size() || pos[static_cast<std::size_t>(b)] < 0) continue;
    Stats& st = seqs_[static_cast<std::size_t>(s)];
    const auto p = static_cast<std::size_t>(pos[static_cast<std::size_t>(b)]);
    if (st.received.size() < p + 1) {
      st.received.resize(p + 1, 0.0);
      st.queries.resize(p + 1, 0);
    }
    for (std::int64_t h = 0; h < n_head; ++h) {
      const auto* row = reinterpret_cast<const float*>(static_cast<const char*>(t->data) + q * t->nb[1] + h * t->nb[2]);
      std::size_t k = 0;
      for (std::int64_t j = 0; j < n_kv && k <= p; ++j) {
        if (row[j] > 0.0f) st.received[k++] += row[j];
      }
    }
    ++st.queries[p];
  }
  offset_[slot] += n_tok;
}

std::vector<float> AttentionProbe::importance(SeqId seq) const {
  if (seq < 0 || static_cast<std::size_t>(seq) >= seqs_.size()) return {};
  const Stats& st = seqs_[static_cast<std::size_t>(seq)];
  std::vector<float> out(st.received.size(), 0.0f);
  std::uint64_t seeing = 0;  // queries at positions >= i
  for (std::size_t i = st.received.size(); i-- > 0;) {
    seeing += st.queries[i];
    if (seeing == 0) return {};  // a position no observed query could see: nothing to go by
    out[i] = static_cast<float>(st.received[i] / static_cast<double>(seeing));
  }
  return out;
}

void AttentionProbe::reset(SeqId seq) {
  if (seq < 0 || static_cast<std::size_t>(seq) >= seqs_.size()) return;
  seqs_[static_cast<std::size_t>(seq)] = {};
}

}  // namespace llmd::engine
