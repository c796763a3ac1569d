// The attention probe on the real model: per-position importance from llama.cpp's softmaxed
// attention weights (flash attention off), kept per sequence, reset when a sequence is cleared,
// absent with flash attention on.
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

std::unique_ptr<Context> observing_context(const Model& model, FlashAttn fa) {
  ContextParams p;
  p.n_ctx = 512;
  p.n_slots = 2;
  p.n_batch = 128;
  p.n_ubatch = 32;  // several ubatches per prompt: the probe follows the batch across them
  p.n_threads = 2;
  p.flash_attn = fa;
  p.observe_attention = true;
  auto ctx = Context::create(model, p);
  EXPECT_TRUE(ctx) << ctx.error().to_string();
  return ctx ? std::move(*ctx) : nullptr;
}

TEST(AttentionProbe, ImportanceCoversEveryPositionOfEachSequence) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = observing_context(*model, FlashAttn::off);
  ASSERT_TRUE(ctx);
  const auto prompt = test::tokens_of(tok, "Once upon a time there was a little girl named Lily who loved to play in the park");
  const auto out = test::run_one(*ctx, tok, {0, prompt, test::greedy(20)});
  const std::size_t n = static_cast<std::size_t>(ctx->seq_pos_max(0) + 1);
  ASSERT_GT(n, prompt.size());

  const auto imp = ctx->attention_importance(0);
  ASSERT_EQ(imp.size(), n);
  const float n_head = static_cast<float>(model->info().n_head);
  double total = 0;
  for (float v : imp) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, n_head * 1.0001f);  // a weight per head, each at most 1
    total += v;
  }
  EXPECT_GT(total, 0.0);
  // Not uniform: some positions draw clearly more attention than others.
  EXPECT_GT(*std::max_element(imp.begin(), imp.end()), 2.0f * *std::min_element(imp.begin(), imp.end()));

  EXPECT_TRUE(ctx->attention_importance(1).empty());  // the other sequence saw nothing
  test::run_one(*ctx, tok, {1, prompt, test::greedy(4)});
  EXPECT_EQ(ctx->attention_importance(1).size(), prompt.size() + 3);
  EXPECT_EQ(ctx->attention_importance(0).size(), n);  // and did not disturb sequence 0's
  ctx->seq_clear(0);
  EXPECT_TRUE(ctx->attention_importance(0).empty());
}

TEST(AttentionProbe, FlashAttentionHidesTheWeights) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = observing_context(*model, FlashAttn::on);
  ASSERT_TRUE(ctx);
  test::run_one(*ctx, tok, {0, test::tokens_of(tok, "Once upon a time"), test::greedy(4)});
  EXPECT_TRUE(ctx->attention_importance(0).empty());  // the policy then falls back to positions
}

}  // namespace
}  // namespace llmd::engine
