// The sliding overflow policy (core/context_window.h) against the real llmd on --ctx 256: the
// window moves as under drop_oldest, but the kept turns' KV is shifted (llama.cpp's K-shift)
// instead of recomputed: from the session's slot, or from its chunks when it was swapped out; the
// shifted KV gets its own lineage (kvstore ChunkStore::lineage_seed), so it is restored after a
// restart and shared with a fork, and never passed off as what a recompute gives (an audit says
// so). Greedy, flash attention off, exact chunks of 16.
#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

DaemonOptions small_ctx(const std::string& slots = "1") {
  DaemonOptions o;
  // A fill target of 90%: a move keeps two turns (a turn is about 50 tokens here, with the template).
  o.args = {"--ctx", "256", "--slots", slots, "--flash-attn", "off", "--kv-policy", "exact", "--chunk-tokens", "16",
            "--context-fill-target", "90"};
  return o;
}

std::string create(const client::HttpClient& c, const std::string& overflow) {
  auto r = call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "You tell short stories."}, {"overflow", overflow}});
  EXPECT_EQ(r.status, 201u) << r.raw;
  return r.body.value("id", "");
}

JsonReply say(const client::HttpClient& c, const std::string& id, const std::string& text, int max_tokens = 8) {
  return session_turn(c, id, text, max_tokens);
}

std::string turn_text(int i) { return "Go " + std::to_string(i % 10) + "."; }

struct Moves {
  int moved = 0;
  std::uint64_t dropped = 0;
  std::int64_t recomputed_on_moves = 0;  // restored_tokens summed over the turns that moved
  std::int64_t cached_on_moves = 0;      // cached_tokens summed over them
};

// `turns` turns of one session, every one answered; what its moves cost.
Moves converse(const client::HttpClient& c, const std::string& id, int turns) {
  Moves m;
  for (int i = 0; i < turns; ++i) {
    const auto r = say(c, id, turn_text(i));
    EXPECT_EQ(r.status, 200u) << "turn " << i << ": " << r.raw;
    if (r.status != 200u) break;
    const auto& u = r.body["usage"];
    EXPECT_LE(u["prompt_tokens_details"]["cached_tokens"].get<int>(), u["prompt_tokens"].get<int>()) << u;
    if (!u["window"]["moved"].get<bool>()) continue;
    ++m.moved;
    m.dropped += u["window"]["dropped_tokens"].get<std::uint64_t>();
    m.recomputed_on_moves += u["restored_tokens"].get<int>();
    m.cached_on_moves += u["prompt_tokens_details"]["cached_tokens"].get<int>();
  }
  return m;
}

// 50 turns: every one answered, the transcript whole, the window reported; a move recomputes
// nothing under sliding (the kept turns are shifted in the slot), while drop_oldest recomputes
// the kept turns at each move. The shifted KV is not what a recompute gives: an audit refuses.
TEST(Sliding, FiftyTurnsShiftTheKeptTurnsInsteadOfRecomputingThem) {
  DaemonProcess d(scratch_dir(), small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string dropping = create(c, "drop_oldest");
  const Moves drop = converse(c, dropping, 50);
  const std::string id = create(c, "sliding");
  ASSERT_EQ(call(c, "POST", "/v1/sessions/" + id + "/audit").status, 200u) << "nothing shifted yet";
  const Moves slide = converse(c, id, 50);
  EXPECT_GE(drop.moved, 3);
  EXPECT_GT(drop.recomputed_on_moves, 20 * drop.moved) << "drop_oldest recomputes the kept turns";
  EXPECT_GE(slide.moved, 3);
  EXPECT_EQ(slide.recomputed_on_moves, 0) << "sliding shifts them";
  EXPECT_GT(slide.cached_on_moves, drop.cached_on_moves + 20 * slide.moved);

  const auto s = call(c, "GET", "/v1/sessions/" + id);
  ASSERT_EQ(s.status, 200u);
  EXPECT_EQ(s.body["messages"].size(), 101u) << "the transcript stays whole";
  EXPECT_LE(s.body["n_tokens"].get<int>(), 257);
  EXPECT_EQ(s.body["window"]["overflow"], "sliding");
  EXPECT_EQ(s.body["window"]["dropped_tokens"].get<std::uint64_t>(), slide.dropped);
  const auto audit = call(c, "POST", "/v1/sessions/" + id + "/audit");
  EXPECT_NE(audit.status, 200u) << audit.raw;
  EXPECT_NE(audit.raw.find("shifted"), std::string::npos) << audit.raw;
  EXPECT_EQ(d.log().find("KV check failed"), std::string::npos) << d.log();
}

// The same sliding conversation twice, on one slot each: once alone (always resident: every move
// shifts the slot's KV), once taking turns with another session (never resident: every move loads
// the KV from before it from chunks and shifts that). The two paths give the same KV, so the same
// answers, turn by turn (greedy, exact chunks); the swapped-out one recomputes nothing at a move.
// After a restart its shifted KV comes back from chunks of its lineage, and a fork made before the
// restart loads the same chunks and answers exactly as the original.
TEST(Sliding, ASwappedOutSessionSlidesFromItsChunksAsTheResidentOneDoes) {
  constexpr int kTurns = 16;
  std::vector<std::string> resident;
  {
    DaemonProcess d(scratch_dir(), small_ctx());
    ASSERT_TRUE(d.start()) << d.log();
    const std::string id = create(d.client(), "sliding");
    int moves = 0;
    for (int i = 0; i < kTurns; ++i) {
      const auto r = say(d.client(), id, turn_text(i));
      ASSERT_EQ(r.status, 200u) << r.raw;
      resident.push_back(r.body["message"]["content"]);
      moves += r.body["usage"]["window"]["moved"].get<bool>() ? 1 : 0;
      EXPECT_EQ(r.body["usage"]["loaded_tokens"].get<int>(), 0) << r.raw;
    }
    ASSERT_GE(moves, 2) << "the window moved too rarely to compare";
  }
  const std::string dir = scratch_dir();
  std::string id, fork;
  {
    DaemonProcess d(dir, small_ctx());
    ASSERT_TRUE(d.start()) << d.log();
    const auto c = d.client();
    id = create(c, "sliding");
    const std::string other = create(c, "drop_oldest");
    bool shifted = false;  // after the first move its KV is shifted: always loaded (never recomputed)
    for (int i = 0; i < kTurns; ++i) {
      const auto r = say(c, id, turn_text(i));
      ASSERT_EQ(r.status, 200u) << r.raw;
      EXPECT_EQ(r.body["message"]["content"], resident[static_cast<std::size_t>(i)]) << "turn " << i;
      const auto& u = r.body["usage"];
      if (shifted) {
        EXPECT_GT(u["loaded_tokens"].get<int>(), 0) << "turn " << i << ": " << u;
      }
      if (u["window"]["moved"].get<bool>()) {
        shifted = true;
        EXPECT_EQ(u["restored_tokens"].get<int>(), 0) << u;
        EXPECT_EQ(u["prompt_tokens_details"]["cached_tokens"].get<int>(), u["loaded_tokens"].get<int>()) << u;
      }
      ASSERT_EQ(say(c, other, turn_text(100 + i)).status, 200u);
    }
    const auto f = call(c, "POST", "/v1/sessions/" + id + "/fork");
    ASSERT_EQ(f.status, 201u) << f.raw;
    fork = f.body["id"];
    ASSERT_EQ(d.stop(), 0);
  }
  DaemonProcess d(dir, small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const auto a = say(c, id, "And then?");
  ASSERT_EQ(a.status, 200u) << a.raw;
  EXPECT_GT(a.body["usage"]["loaded_tokens"].get<int>(), 0) << a.raw;
  EXPECT_EQ(a.body["usage"]["restored_tokens"].get<int>(), 0) << a.raw;
  const auto b = say(c, fork, "And then?");
  ASSERT_EQ(b.status, 200u) << b.raw;
  EXPECT_GT(b.body["usage"]["loaded_tokens"].get<int>(), 0) << b.raw;
  EXPECT_EQ(b.body["message"]["content"], a.body["message"]["content"]);
}

}  // namespace
}  // namespace llmd::test
