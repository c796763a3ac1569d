// Per-client latency windows (core/client_latency.h): nearest-rank percentiles of the requests
// that finished within the window, per client, bounded.
#include "core/client_latency.h"

#include <gtest/gtest.h>

namespace llmd::core {
namespace {

ClientStats client(const std::string& id) {
  ClientStats c;
  c.view.client = id;
  return c;
}

TEST(ClientLatencies, PercentilesPerClientOverTheWindow) {
  ClientLatencies l;
  const Clock::time_point t0{};
  for (int i = 1; i <= 100; ++i) l.record("a", t0 + std::chrono::milliseconds(i), i, 10.0 * i);
  l.record("b", t0, 7, 70);
  std::vector<ClientStats> clients = {client("a"), client("b"), client("c")};
  l.fill(t0 + std::chrono::seconds(1), clients);
  EXPECT_EQ(clients[0].latency.requests, 100u);
  EXPECT_EQ(clients[0].latency.ttft_ms.p50, 50);
  EXPECT_EQ(clients[0].latency.ttft_ms.p90, 90);
  EXPECT_EQ(clients[0].latency.ttft_ms.p99, 99);
  EXPECT_EQ(clients[0].latency.e2e_ms.p99, 990);
  EXPECT_EQ(clients[1].latency.requests, 1u);
  EXPECT_EQ(clients[1].latency.ttft_ms.p50, 7);
  EXPECT_EQ(clients[1].latency.ttft_ms.p99, 7);
  EXPECT_EQ(clients[2].latency.requests, 0u);  // none: nothing to say
  // A minute later only what finished within it counts; then nothing.
  l.record("a", t0 + ClientLatencies::kWindow + std::chrono::milliseconds(50), 1000, 2000);
  l.fill(t0 + ClientLatencies::kWindow + std::chrono::milliseconds(60), clients);
  EXPECT_EQ(clients[0].latency.requests, 42u);  // samples 60..100 (the window starts at 60 ms) and the new one
  EXPECT_EQ(clients[0].latency.ttft_ms.p99, 1000);
  EXPECT_EQ(clients[1].latency.requests, 0u);
  l.fill(t0 + 3 * ClientLatencies::kWindow, clients);
  EXPECT_EQ(clients[0].latency.requests, 0u);
}

TEST(ClientLatencies, BoundedPerClientAndInClients) {
  ClientLatencies l;
  const Clock::time_point t0{};
  for (std::size_t i = 0; i < 2 * ClientLatencies::kSamples; ++i) l.record("a", t0, 1, 1);
  std::vector<ClientStats> clients = {client("a")};
  l.fill(t0, clients);
  EXPECT_EQ(clients[0].latency.requests, ClientLatencies::kSamples);
  for (std::size_t i = 0; i <= ClientLatencies::kClients; ++i) {
    l.record("c" + std::to_string(i), t0 + std::chrono::milliseconds(i + 1), 1, 1);
  }
  clients = {client("a"), client("c" + std::to_string(ClientLatencies::kClients))};
  l.fill(t0 + std::chrono::seconds(2), clients);
  EXPECT_EQ(clients[0].latency.requests, 0u);  // the least recently active went first
  EXPECT_EQ(clients[1].latency.requests, 1u);
}

}  // namespace
}  // namespace llmd::core
