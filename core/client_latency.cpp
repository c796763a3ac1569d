// Per-client latency windows (see client_latency.h).
#include "core/client_latency.h"

#include <algorithm>
#include <cmath>

namespace llmd::core {
namespace {

// The nearest-rank percentile of sorted values (p in (0, 100]).
double percentile(const std::vector<double>& sorted, double p) {
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

void ClientLatencies::record(const std::string& client, Clock::time_point now, double ttft_ms, double e2e_ms) {
  auto& samples = clients_[client];
  samples.push_back({now, ttft_ms, e2e_ms});
  while (samples.size() > kSamples || samples.front().at < now - kWindow) samples.pop_front();
  if (clients_.size() > kClients) prune(now);  // the other clients only when there are too many
}

void ClientLatencies::prune(Clock::time_point now) {
  for (auto it = clients_.begin(); it != clients_.end();) {
    auto& s = it->second;
    while (!s.empty() && s.front().at < now - kWindow) s.pop_front();
    it = s.empty() ? clients_.erase(it) : std::next(it);
  }
  while (clients_.size() > kClients) {
    auto oldest = std::min_element(clients_.begin(), clients_.end(), [](const auto& a, const auto& b) {
      return a.second.back().at < b.second.back().at;
    });
    clients_.erase(oldest);
  }
}

void ClientLatencies::fill(Clock::time_point now, std::vector<ClientStats>& clients) const {
  for (auto& c : clients) {
    c.latency = {};
    auto it = clients_.find(c.view.client);
    if (it == clients_.end()) continue;
    std::vector<double> ttft, e2e;
    for (const auto& s : it->second) {
      if (s.at < now - kWindow) continue;
      ttft.push_back(s.ttft_ms);
      e2e.push_back(s.e2e_ms);
    }
    if (ttft.empty()) continue;
    std::sort(ttft.begin(), ttft.end());
    std::sort(e2e.begin(), e2e.end());
    c.latency.requests = static_cast<std::uint32_t>(ttft.size());
    c.latency.ttft_ms = {percentile(ttft, 50), percentile(ttft, 90), percentile(ttft, 99)};
    c.latency.e2e_ms = {percentile(e2e, 50), percentile(e2e, 90), percentile(e2e, 99)};
  }
}

}  // namespace llmd::core
