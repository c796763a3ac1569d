// Tolerance policies (see policy.h).
#include "kvstore/policy.h"

#include <algorithm>
#include <numeric>

#include "engine/ggml_types.h"

namespace llmd::kvstore {
namespace {

bool is_protected(std::size_t i, std::size_t n, const PolicyParams& p) {
  return i < p.sink_chunks || i + p.recent_chunks >= n;
}

}  // namespace

std::string_view policy_name(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::exact: return "exact";
    case PolicyKind::position: return "position";
    case PolicyKind::attention: return "attention";
    case PolicyKind::q8_0: return "q8_0";
    case PolicyKind::q4_0: return "q4_0";
  }
  return "unknown";
}

Result<PolicyKind> policy_from_name(std::string_view name) {
  for (PolicyKind k : {PolicyKind::exact, PolicyKind::position, PolicyKind::attention, PolicyKind::q8_0, PolicyKind::q4_0}) {
    if (name == policy_name(k)) return k;
  }
  return Error(Errc::invalid_argument,
               "unknown KV policy '" + std::string(name) + "' (exact, position, attention, q8_0, q4_0)");
}

std::array<double, 4> codec_ratios(const engine::KvLayout& layout) {
  std::array<double, 4> r{1.0, 1.0, 0.0, 0.0};
  const std::uint64_t exact = layout.bytes_per_cell();
  if (exact == 0) return r;
  int idx = 2;
  for (const char* name : {"q8_0", "q4_0"}) {
    auto type = engine::ggml_type_from_name(name);
    std::uint64_t total = 0;
    bool ok = static_cast<bool>(type);
    for (std::uint32_t l = 0; ok && l < layout.n_layer; ++l) {
      for (auto [t, rb] : {std::pair{layout.k_type[l], layout.k_row_bytes[l]}, std::pair{layout.v_type[l], layout.v_row_bytes[l]}}) {
        auto n = engine::ggml_row_elements(t, rb);
        auto b = n ? engine::ggml_row_bytes(*type, *n) : std::nullopt;
        if (!b) {
          ok = false;
          break;
        }
        total += std::min<std::uint64_t>(*b, rb);  // never "compress" to something larger than the own type
      }
    }
    r[static_cast<std::size_t>(idx++)] = ok ? static_cast<double>(total) / static_cast<double>(exact) : 0.0;
  }
  return r;
}

std::vector<float> position_importance(std::size_t n, const PolicyParams& p) {
  std::vector<float> imp(n);
  for (std::size_t i = 0; i < n; ++i) {
    imp[i] = is_protected(i, n, p) ? 1.0f : 1.0f / static_cast<float>(2 + (n - 1 - i));
  }
  return imp;
}

std::vector<float> attention_chunk_importance(std::span<const float> per_position, std::size_t n_cells,
                                              std::uint32_t chunk_tokens) {
  if (chunk_tokens == 0 || per_position.size() < n_cells) return {};
  std::vector<float> out;
  for (std::size_t b = 0; b < n_cells; b += chunk_tokens) {
    const std::size_t e = std::min(n_cells, b + chunk_tokens);
    double sum = 0;
    for (std::size_t i = b; i < e; ++i) sum += per_position[i];
    out.push_back(static_cast<float>(sum / static_cast<double>(e - b)));
  }
  return out;
}

std::vector<Codec> choose_codecs(const PolicyParams& p, std::span<const float> importance,
                                 const std::array<double, 4>& ratios) {
  const std::size_t n = importance.size();
  std::vector<Codec> codecs(n, Codec::exact);
  if (p.kind == PolicyKind::exact || n == 0) return codecs;
  auto usable = [&](Codec c) { return ratios[static_cast<std::size_t>(c)] > 0.0; };

  std::vector<std::size_t> order;  // unprotected chunks, least important (then oldest) first
  for (std::size_t i = 0; i < n; ++i) {
    if (!is_protected(i, n, p)) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return importance[a] < importance[b]; });

  if (p.kind == PolicyKind::q8_0 || p.kind == PolicyKind::q4_0) {
    const Codec c = p.kind == PolicyKind::q8_0 ? Codec::q8_0 : Codec::q4_0;
    if (usable(c)) {
      for (std::size_t i : order) codecs[i] = c;
    }
    return codecs;
  }
  // position: demote the least important chunks a step at a time until the target ratio holds.
  double total = static_cast<double>(n);  // in units of one exact chunk
  const double target = p.target_ratio * static_cast<double>(n);
  for (Codec step : {Codec::q8_0, Codec::q4_0}) {
    if (!usable(step)) continue;
    for (std::size_t i : order) {
      if (total <= target) return codecs;
      const double before = ratios[static_cast<std::size_t>(codecs[i])];
      const double after = ratios[static_cast<std::size_t>(step)];
      if (after >= before) continue;
      codecs[i] = step;
      total -= before - after;
    }
  }
  return codecs;
}

int tolerance_level(Codec codec) {
  switch (codec) {
    case Codec::exact:
    case Codec::exact_zstd: return 0;
    case Codec::q8_0: return 1;
    case Codec::q4_0: return 2;
  }
  return 0;
}

}  // namespace llmd::kvstore
