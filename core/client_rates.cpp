// Per-client rate windows (see client_rates.h).
#include "core/client_rates.h"

#include <algorithm>

namespace llmd::core {

void ClientRates::record(Clock::time_point now, const std::vector<ClientStats>& clients) {
  Sample s{now, {}};
  for (const auto& c : clients) s.clients[c.view.client] = {c.view.output_tokens, c.view.service};
  // The newest sample always holds the latest counters; it stays (a new one follows it) once it is
  // kSampleGap after the one before, so the samples kept are at least kSampleGap apart.
  if (samples_.size() >= 2 && samples_.back().at - samples_[samples_.size() - 2].at < kSampleGap) {
    samples_.back() = std::move(s);
  } else {
    samples_.push_back(std::move(s));
  }
  // One sample older than the window is all a window ending now or later needs.
  while (samples_.size() > 1 && samples_[1].at <= now - kWindow) samples_.pop_front();
}

void ClientRates::fill(Clock::time_point now, std::vector<ClientStats>& clients) const {
  for (auto& c : clients) c.tokens_per_s = c.share = 0;
  const Sample* base = nullptr;
  for (auto it = samples_.rbegin(); it != samples_.rend(); ++it) {
    if (it->at <= now - kWindow) {
      base = &*it;
      break;
    }
  }
  if (base == nullptr) return;
  const double dt = std::chrono::duration<double>(now - base->at).count();
  if (dt <= 0) return;
  auto base_of = [&](const std::string& id) {
    auto it = base->clients.find(id);
    return it == base->clients.end() ? Counters{} : it->second;
  };
  double total = 0;
  for (const auto& c : clients) total += c.view.service - base_of(c.view.client).service;
  for (auto& c : clients) {
    const Counters b = base_of(c.view.client);
    // A client forgotten while idle and seen again starts from 0: never a negative rate.
    c.tokens_per_s = static_cast<double>(c.view.output_tokens - std::min(b.output_tokens, c.view.output_tokens)) / dt;
    c.share = total > 0 ? (c.view.service - b.service) / total : 0.0;
  }
}

}  // namespace llmd::core
