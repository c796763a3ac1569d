// Per-sequence KV state: moving a sequence between slots, parsing llama.cpp's own state bytes
// exactly, and rebuilding a sequence from cut-and-joined rows.
#include <ostream>

#include "engine/seq_state.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

using test::greedy;
using test::tokens_of;

struct StateCase {
  std::string model;
  FlashAttn fa;
  friend void PrintTo(const StateCase& c, std::ostream* os) {
    *os << c.model << (c.fa == FlashAttn::off ? " (flash attention off)"
                       : c.fa == FlashAttn::on ? " (flash attention on)"
                                               : " (flash attention auto)");
  }
};

class StateTest : public ::testing::TestWithParam<StateCase> {
 protected:
  void SetUp() override {
    const auto& c = GetParam();
    model_ = test::load_model(c.model == "stories260K" ? test::stories_path() : test::generated_model(c.model));
    ASSERT_TRUE(model_);
    ctx_ = test::make_context(*model_, 4, 1024, c.fa);
    ASSERT_TRUE(ctx_);
    tok_ = std::make_unique<Tokenizer>(*model_);
    prompt_ = tokens_of(*tok_, "Once upon a time, there was a cat");
  }
  SequenceOutcome run(SeqId seq, std::vector<Token> prompt, int n) {
    return test::run_one(*ctx_, *tok_, {seq, std::move(prompt), greedy(n)});
  }
  std::unique_ptr<Model> model_;
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Tokenizer> tok_;
  std::vector<Token> prompt_;
};

TEST_P(StateTest, LayoutMatchesFlashAttentionSetting) {
  const KvLayout& l = ctx_->kv_layout();
  EXPECT_EQ(l.n_layer, static_cast<uint32_t>(model_->info().n_layer));
  if (GetParam().fa == FlashAttn::off) {
    EXPECT_TRUE(l.v_trans);
  }
  if (GetParam().fa == FlashAttn::on) {
    EXPECT_FALSE(l.v_trans);
  }
  EXPECT_EQ(l.bytes_per_cell(), model_->kv_bytes_per_token("f16", "f16"));
}

TEST_P(StateTest, StateMovedToAnotherSlotContinuesIdentically) {
  const auto whole = run(0, prompt_, 32);  // never interrupted
  ASSERT_EQ(whole.tokens.size(), 32u);

  ctx_->clear_all();
  const auto first = run(1, prompt_, 16);
  ASSERT_EQ(first.tokens.size(), 16u);
  auto bytes = ctx_->seq_state_get(1);
  ASSERT_TRUE(bytes) << bytes.error().to_string();
  ctx_->seq_clear(1);
  ASSERT_TRUE(ctx_->seq_state_set(3, *bytes));
  EXPECT_EQ(ctx_->seq_pos_max(3), static_cast<Pos>(prompt_.size() + 15 - 1));
  // The 16th token was sampled but not decoded yet: it is the continuation's prompt.
  const auto rest = run(3, {first.tokens.back()}, 16);

  std::vector<Token> joined = first.tokens;
  joined.insert(joined.end(), rest.tokens.begin(), rest.tokens.end());
  EXPECT_EQ(joined, whole.tokens);
}

// What n > 1 and concurrent requests rely on: a prefix shared from a running sequence (its
// cells gain a sequence, nothing is copied) continues exactly as if computed in the slot, and
// outlives the source.
TEST_P(StateTest, SharedPrefixContinuesLikeItsOwnPrefill) {
  const auto whole = run(0, prompt_, 24);
  ASSERT_EQ(whole.tokens.size(), 24u);

  ctx_->clear_all();
  const auto source = run(1, prompt_, 8);  // slot 1: the prompt and 7 generated tokens
  ASSERT_EQ(source.tokens.size(), 8u);
  const auto n = static_cast<Pos>(prompt_.size() - 1);
  ASSERT_TRUE(ctx_->seq_share_prefix(1, 2, n));
  EXPECT_EQ(ctx_->seq_pos_min(2), 0);
  EXPECT_EQ(ctx_->seq_pos_max(2), n - 1);
  ctx_->seq_clear(1);  // the source goes: the shared cells stay with slot 2
  const auto shared = run(2, {prompt_.back()}, 24);
  EXPECT_EQ(shared.tokens, whole.tokens);

  // A source that does not hold the positions asked for shares nothing and leaves the target empty.
  EXPECT_FALSE(ctx_->seq_share_prefix(1, 3, n));
  EXPECT_EQ(ctx_->seq_pos_max(3), -1);
  EXPECT_FALSE(ctx_->seq_share_prefix(2, 3, static_cast<Pos>(prompt_.size() + 100)));
  EXPECT_EQ(ctx_->seq_pos_max(3), -1);
}

TEST_P(StateTest, ParserRoundTripsLlamaStateBitExactly) {
  run(2, prompt_, 20);
  auto bytes = ctx_->seq_state_get(2);
  ASSERT_TRUE(bytes);
  auto st = parse_seq_state(*bytes, ctx_->seq_state_format());
  ASSERT_TRUE(st) << st.error().to_string();
  const int s = st->active_stream();
  ASSERT_GE(s, 0);
  const auto& stream = st->streams[static_cast<size_t>(s)];
  EXPECT_EQ(stream.cells.size(), prompt_.size() + 19);
  for (size_t i = 0; i < stream.cells.size(); ++i) {
    EXPECT_EQ(stream.cells[i].pos, static_cast<Pos>(i));
    EXPECT_EQ(stream.cells[i].seq_ids, std::vector<SeqId>{2});
  }
  EXPECT_EQ(layout_of(stream, st->cell_ext_bytes), ctx_->kv_layout());
  EXPECT_EQ(serialize_seq_state(*st), *bytes);
}

// Cut a sequence into 16-token chunks, rejoin only a prefix of them, restore that into another slot
// and recompute the rest from tokens: the continuation is identical. This is the kvstore's restore
// path (chunks from RAM/disk + recompute) in miniature.
TEST_P(StateTest, PrefixOfChunksPlusRecomputeContinuesIdentically) {
  const auto whole = run(0, prompt_, 40);
  ASSERT_EQ(whole.tokens.size(), 40u);
  std::vector<Token> history = prompt_;
  history.insert(history.end(), whole.tokens.begin(), whole.tokens.begin() + 20);

  ctx_->clear_all();
  const auto first = run(0, prompt_, 21);  // KV now holds prompt + 20 generated tokens
  ASSERT_EQ(first.tokens.size(), 21u);
  auto bytes = ctx_->seq_state_get(0);
  ASSERT_TRUE(bytes);
  auto st = parse_seq_state(*bytes, ctx_->seq_state_format());
  ASSERT_TRUE(st);
  const auto& stream = st->streams[static_cast<size_t>(st->active_stream())];
  ASSERT_EQ(stream.cells.size(), history.size());

  constexpr size_t kChunk = 16;
  std::vector<KvStream> chunks;
  for (size_t b = 0; b < stream.cells.size(); b += kChunk) {
    auto c = slice_cells(stream, b, std::min(b + kChunk, stream.cells.size()));
    ASSERT_TRUE(c);
    chunks.push_back(std::move(*c));
  }
  ASSERT_GE(chunks.size(), 2u);
  SeqState prefix = *st;
  prefix.streams[static_cast<size_t>(st->active_stream())] = KvStream{};
  KvStream& joined = prefix.streams[static_cast<size_t>(st->active_stream())];
  for (size_t i = 0; i + 1 < chunks.size(); ++i) ASSERT_TRUE(append_cells(joined, chunks[i]));
  const size_t kept = joined.cells.size();

  ASSERT_TRUE(ctx_->seq_state_set(2, serialize_seq_state(prefix)));
  EXPECT_EQ(ctx_->seq_pos_max(2), static_cast<Pos>(kept - 1));
  // Recompute the last chunk's tokens, then the pending token, and continue.
  std::vector<Token> tail(history.begin() + static_cast<std::ptrdiff_t>(kept), history.end());
  tail.push_back(first.tokens.back());
  const auto rest = test::run_one(*ctx_, *tok_, {2, tail, greedy(19)});
  EXPECT_EQ(rest.tokens, std::vector<Token>(whole.tokens.begin() + 21, whole.tokens.end()));
}

TEST_P(StateTest, DamagedOrForeignStateIsRefusedWithoutHarm) {
  run(0, prompt_, 8);
  auto bytes = ctx_->seq_state_get(0);
  ASSERT_TRUE(bytes);

  auto truncated = *bytes;
  truncated.resize(truncated.size() - 7);
  EXPECT_EQ(test::code_of(ctx_->seq_state_set(1, truncated)), Errc::corrupt);

  auto bad_magic = *bytes;
  bad_magic[0] ^= 0x5A;
  EXPECT_EQ(test::code_of(ctx_->seq_state_set(1, bad_magic)), Errc::corrupt);

  // A state from a model with another layout.
  auto other_model = test::load_model(GetParam().model == "stories260K" ? test::generated_model("tiny-q8_0")
                                                                        : test::stories_path());
  ASSERT_TRUE(other_model);
  auto other_ctx = test::make_context(*other_model);
  ASSERT_TRUE(other_ctx);
  Tokenizer other_tok(*other_model);
  test::run_one(*other_ctx, other_tok, {0, tokens_of(other_tok, "Hello there"), greedy(4)});
  auto foreign = other_ctx->seq_state_get(0);
  ASSERT_TRUE(foreign);
  EXPECT_EQ(test::code_of(ctx_->seq_state_set(1, *foreign)), Errc::invalid_argument);

  EXPECT_EQ(ctx_->seq_pos_max(1), -1);          // nothing half-restored
  EXPECT_GE(ctx_->seq_pos_max(0), 0);           // the source is untouched
  EXPECT_EQ(test::code_of(ctx_->seq_state_set(7, *bytes)), Errc::invalid_argument);  // no such slot
}

TEST_P(StateTest, EmptySequenceStateRestoresToEmpty) {
  auto bytes = ctx_->seq_state_get(3);
  ASSERT_TRUE(bytes);
  auto st = parse_seq_state(*bytes, ctx_->seq_state_format());
  ASSERT_TRUE(st);
  EXPECT_EQ(st->n_cells(), 0u);
  run(1, prompt_, 4);
  ASSERT_TRUE(ctx_->seq_state_set(1, *bytes));
  EXPECT_EQ(ctx_->seq_pos_max(1), -1);
}

INSTANTIATE_TEST_SUITE_P(Models, StateTest,
                         ::testing::Values(StateCase{"stories260K", FlashAttn::automatic},
                                           StateCase{"stories260K", FlashAttn::off},
                                           StateCase{"tiny-q8_0", FlashAttn::on},
                                           StateCase{"tiny-f16", FlashAttn::off}),
                         [](const auto& p) {
                           return test::param_name(p.param.model) + (p.param.fa == FlashAttn::off  ? "_fa_off"
                                                                     : p.param.fa == FlashAttn::on ? "_fa_on"
                                                                                                   : "_fa_auto");
                         });

}  // namespace
}  // namespace llmd::engine
