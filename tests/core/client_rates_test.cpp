// Per-client rate windows (core/client_rates.h): pure, driven by an explicit clock.
#include "core/client_rates.h"

#include <gtest/gtest.h>

namespace llmd::core {
namespace {

using std::chrono::milliseconds;

ClientStats client(const std::string& id, std::uint64_t output_tokens, double service) {
  ClientStats c;
  c.view.client = id;
  c.view.output_tokens = output_tokens;
  c.view.service = service;
  return c;
}

TEST(ClientRates, RatesOverTheLastSecondAndShares) {
  ClientRates rates;
  const Clock::time_point t0{};
  rates.record(t0, {client("a", 0, 0), client("b", 0, 0)});
  std::vector<ClientStats> now = {client("a", 100, 300), client("b", 50, 100)};
  rates.record(t0 + milliseconds(1000), now);
  rates.fill(t0 + milliseconds(1000), now);
  EXPECT_DOUBLE_EQ(now[0].tokens_per_s, 100.0);
  EXPECT_DOUBLE_EQ(now[1].tokens_per_s, 50.0);
  EXPECT_DOUBLE_EQ(now[0].share, 0.75);
  EXPECT_DOUBLE_EQ(now[1].share, 0.25);
}

TEST(ClientRates, NothingBeforeAWholeWindow) {
  ClientRates rates;
  const Clock::time_point t0{};
  rates.record(t0, {client("a", 0, 0)});
  std::vector<ClientStats> now = {client("a", 40, 40)};
  rates.record(t0 + milliseconds(500), now);
  rates.fill(t0 + milliseconds(900), now);
  EXPECT_EQ(now[0].tokens_per_s, 0);
  EXPECT_EQ(now[0].share, 0);
}

// Reading is const: however often fill() runs, the same counters at the same time give the same
// rates (the old stats() rolled its window on every call a second after the last).
TEST(ClientRates, ReadingDoesNotMoveTheWindow) {
  ClientRates rates;
  const Clock::time_point t0{};
  rates.record(t0, {client("a", 0, 0)});
  std::vector<ClientStats> latest = {client("a", 200, 200)};
  rates.record(t0 + milliseconds(1000), latest);
  for (int i = 0; i < 3; ++i) {
    auto c = latest;
    rates.fill(t0 + milliseconds(1600), c);
    EXPECT_DOUBLE_EQ(c[0].tokens_per_s, 125.0);  // 200 tokens since t0, over 1.6 s
  }
}

// The window slides with the samples: with counters recorded every 100 ms, the base is the
// newest sample a second old, so the rate is the last second's.
TEST(ClientRates, TheWindowSlides) {
  ClientRates rates;
  const Clock::time_point t0{};
  // 10 tokens per 100 ms for 2 s, then 30 per 100 ms for 2 s.
  std::uint64_t tokens = 0;
  for (int i = 0; i <= 40; ++i) {
    if (i > 0) tokens += i <= 20 ? 10 : 30;
    rates.record(t0 + milliseconds(100 * i), {client("a", tokens, static_cast<double>(tokens))});
  }
  std::vector<ClientStats> c = {client("a", tokens, static_cast<double>(tokens))};
  rates.fill(t0 + milliseconds(4000), c);
  EXPECT_DOUBLE_EQ(c[0].tokens_per_s, 300.0);
  EXPECT_DOUBLE_EQ(c[0].share, 1.0);
}

// An engine that goes idle records nothing more: a second later its clients' rates are 0.
TEST(ClientRates, IdleClientsFallToZero) {
  ClientRates rates;
  const Clock::time_point t0{};
  rates.record(t0, {client("a", 0, 0)});
  std::vector<ClientStats> last = {client("a", 100, 100)};
  rates.record(t0 + milliseconds(1000), last);
  auto c = last;
  rates.fill(t0 + milliseconds(5000), c);
  EXPECT_EQ(c[0].tokens_per_s, 0);
  EXPECT_EQ(c[0].share, 0);
}

// A client the scheduler forgot while idle and sees again counts from 0, never negative; a new
// client counts from 0 too.
TEST(ClientRates, ForgottenAndNewClientsCountFromZero) {
  ClientRates rates;
  const Clock::time_point t0{};
  rates.record(t0, {client("a", 500, 500)});
  std::vector<ClientStats> now = {client("a", 20, 20), client("b", 30, 30)};
  rates.record(t0 + milliseconds(1000), now);
  rates.fill(t0 + milliseconds(1000), now);
  EXPECT_DOUBLE_EQ(now[0].tokens_per_s, 0.0);
  EXPECT_DOUBLE_EQ(now[1].tokens_per_s, 30.0);
}

}  // namespace
}  // namespace llmd::core
