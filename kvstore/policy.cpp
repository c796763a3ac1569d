// Tolerance policies (see policy.h).
#include "kvstore/policy.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <utility>


namespace llmd::kvstore {
namespace {

bool is_protected(std::size_t i, std::size_t n, const PolicyParams& p) {
  return i < p.sink_chunks || i + p.recent_chunks >= n;
}

}  // namespace

constexpr PolicyKind kAllKinds[] = {PolicyKind::exact, PolicyKind::position, PolicyKind::attention, PolicyKind::q8_0,
                                    PolicyKind::q4_0,  PolicyKind::kivi8,    PolicyKind::kivi4,     PolicyKind::kivi2};

std::string_view policy_name(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::exact: return "exact";
    case PolicyKind::position: return "position";
    case PolicyKind::attention: return "attention";
    case PolicyKind::q8_0: return "q8_0";
    case PolicyKind::q4_0: return "q4_0";
    case PolicyKind::kivi8: return "kivi8";
    case PolicyKind::kivi4: return "kivi4";
    case PolicyKind::kivi2: return "kivi2";
  }
  return "unknown";
}

Result<PolicyKind> policy_from_name(std::string_view name) {
  for (PolicyKind k : kAllKinds) {
    if (name == policy_name(k)) return k;
  }
  return Error(Errc::invalid_argument, "unknown KV policy '" + std::string(name) +
                                           "' (exact, position, attention, q8_0, q4_0, kivi8, kivi4, kivi2)");
}

CodecRatios codec_ratios(const engine::KvLayout& layout, std::uint32_t chunk_tokens) {
  CodecRatios r{};
  r[static_cast<std::size_t>(Codec::exact)] = r[static_cast<std::size_t>(Codec::exact_zstd)] = 1.0;
  const std::uint32_t n = std::max<std::uint32_t>(chunk_tokens, 1);
  auto exact = chunk_payload_bytes(layout, Codec::exact, n);
  if (!exact || *exact == 0) return r;
  for (Codec c : {Codec::q8_0, Codec::q4_0, Codec::kivi8, Codec::kivi4, Codec::kivi2}) {
    auto b = chunk_payload_bytes(layout, c, n);
    r[static_cast<std::size_t>(c)] = b ? static_cast<double>(*b) / static_cast<double>(*exact) : 0.0;
  }
  return r;
}

double codec_distortion(Codec codec) {
  auto levels = [](double l) { return 1.0 / (l * l); };
  switch (codec) {
    case Codec::exact:
    case Codec::exact_zstd: return 0.0;
    case Codec::kivi8: return levels(255);
    case Codec::q8_0: return levels(127);  // symmetric: half the levels over the block's range
    case Codec::kivi4: return levels(15);
    case Codec::q4_0: return levels(7);
    case Codec::kivi2: return levels(3);
  }
  return 0.0;
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

std::vector<Codec> choose_codecs(const PolicyParams& p, std::span<const float> importance, const CodecRatios& ratios) {
  const std::size_t n = importance.size();
  std::vector<Codec> codecs(n, Codec::exact);
  if (p.kind == PolicyKind::exact || n == 0) return codecs;
  auto ratio = [&](Codec c) { return ratios[static_cast<std::size_t>(c)]; };

  std::vector<std::size_t> unprotected;
  for (std::size_t i = 0; i < n; ++i) {
    if (!is_protected(i, n, p)) unprotected.push_back(i);
  }
  if (p.kind != PolicyKind::position && p.kind != PolicyKind::attention) {  // uniform baselines
    const Codec c = p.kind == PolicyKind::q8_0   ? Codec::q8_0
                    : p.kind == PolicyKind::q4_0  ? Codec::q4_0
                    : p.kind == PolicyKind::kivi8 ? Codec::kivi8
                    : p.kind == PolicyKind::kivi4 ? Codec::kivi4
                                                  : Codec::kivi2;
    if (ratio(c) > 0.0) {
      for (std::size_t i : unprotected) codecs[i] = c;
    }
    return codecs;
  }

  // The ladder: exact, then the usable rungs that are smaller than the one above.
  std::vector<Codec> rungs = {Codec::exact};
  for (Codec c : p.ladder) {
    if (ratio(c) > 0.0 && ratio(c) < ratio(rungs.back())) rungs.push_back(c);
  }
  // Each unprotected chunk's next demotion, cheapest first: least importance-weighted added
  // error per byte saved; ties go to the older chunk.
  std::vector<std::size_t> level(n, 0);
  auto cost = [&](std::size_t i) {
    const Codec from = rungs[level[i]], to = rungs[level[i] + 1];
    return static_cast<double>(std::max(importance[i], 0.0f)) * (codec_distortion(to) - codec_distortion(from)) /
           (ratio(from) - ratio(to));
  };
  using Step = std::pair<double, std::size_t>;
  std::priority_queue<Step, std::vector<Step>, std::greater<>> next;
  if (rungs.size() > 1) {
    for (std::size_t i : unprotected) next.emplace(cost(i), i);
  }
  double total = static_cast<double>(n);  // in units of one exact chunk
  const double target = p.target_ratio * static_cast<double>(n);
  while (total > target && !next.empty()) {
    const std::size_t i = next.top().second;
    next.pop();
    total -= ratio(rungs[level[i]]) - ratio(rungs[level[i] + 1]);
    codecs[i] = rungs[++level[i]];
    if (level[i] + 1 < rungs.size()) next.emplace(cost(i), i);
  }
  return codecs;
}

int tolerance_level(Codec codec) {
  switch (codec) {
    case Codec::exact:
    case Codec::exact_zstd: return 0;
    case Codec::q8_0:
    case Codec::kivi8: return 1;
    case Codec::q4_0:
    case Codec::kivi4: return 2;
    case Codec::kivi2: return 3;
  }
  return 0;
}

}  // namespace llmd::kvstore
