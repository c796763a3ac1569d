// Several sequences decoded in one llama_decode give exactly the tokens each gives alone.
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

using test::greedy;
using test::tokens_of;

class BatchingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchingTest, FourSequencesInOneBatchMatchEachAlone) {
  const std::string& which = GetParam();
  auto model = test::load_model(which == "stories260K" ? test::stories_path() : test::generated_model(which));
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  const std::vector<std::string> prompts = {"Once upon a time", "The little dog ran", "Tom and Sue", "One day, a bird"};
  constexpr int kTokens = 24;

  std::vector<std::vector<Token>> alone;
  {
    auto ctx = test::make_context(*model);
    ASSERT_TRUE(ctx);
    for (size_t i = 0; i < prompts.size(); ++i) {
      ctx->clear_all();
      alone.push_back(test::run_one(*ctx, tok, {0, tokens_of(tok, prompts[i]), greedy(kTokens)}).tokens);
      ASSERT_FALSE(alone.back().empty());
    }
  }

  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  BatchRunner runner(*ctx, tok);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(runner.add({static_cast<SeqId>(i), tokens_of(tok, prompts[i]), greedy(kTokens)}));
  }
  int steps = 0;
  while (true) {
    auto more = runner.step();
    ASSERT_TRUE(more) << more.error().to_string();
    ++steps;
    if (!*more) break;
  }
  // Together they took about as many decodes as one of them alone: they really shared batches.
  EXPECT_LE(steps, kTokens + 1);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto* o = runner.outcome(static_cast<SeqId>(i));
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(o->tokens, alone[i]) << "sequence " << i << " (\"" << prompts[i] << "\") differs when batched";
  }
}

INSTANTIATE_TEST_SUITE_P(Models, BatchingTest,
                         ::testing::Values("stories260K", "tiny-f16", "tiny-q8_0", "tiny-q4_0"),
                         [](const auto& p) { return test::param_name(p.param); });

}  // namespace
}  // namespace llmd::engine

namespace llmd::engine {
namespace {

TEST(BatchRunnerControl, CancelEndsOneJobAndLeavesTheOthers) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  const auto alone = test::run_one(*ctx, tok, {0, test::tokens_of(tok, "Tom and Sue"), test::greedy(20)}).tokens;
  ctx->clear_all();

  BatchRunner r(*ctx, tok);
  ASSERT_TRUE(r.add({0, test::tokens_of(tok, "Tom and Sue"), test::greedy(20)}));
  ASSERT_TRUE(r.add({1, test::tokens_of(tok, "Once upon a time"), test::greedy(200)}));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(r.step());
  r.cancel(1);
  EXPECT_FALSE(r.active(1));
  EXPECT_EQ(r.take_finished(), std::vector<SeqId>{1});
  EXPECT_EQ(r.outcome(1)->finish, FinishReason::cancelled);
  EXPECT_LE(r.outcome(1)->tokens.size(), 3u);
  ASSERT_TRUE(r.run());
  EXPECT_EQ(r.take_finished(), std::vector<SeqId>{0});
  EXPECT_EQ(r.take_outcome(0)->tokens, alone);
  EXPECT_EQ(r.outcome(0), nullptr);
}

// Two sequences that together outgrow the KV pool: the failing step is rolled back, and once one
// job gives way the other completes exactly as it would have alone.
TEST(BatchRunnerControl, FullPoolIsRecoverable) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model, 2, 256);
  ASSERT_TRUE(ctx);
  const auto n_ctx = static_cast<int>(ctx->n_ctx());
  auto long_run = test::greedy(n_ctx - 20);
  long_run.ignore_eog = true;
  const auto prompt = test::tokens_of(tok, "Once upon a time");
  const auto alone = test::run_one(*ctx, tok, {0, prompt, long_run}).tokens;
  ctx->clear_all();

  BatchRunner r(*ctx, tok);
  ASSERT_TRUE(r.add({0, prompt, long_run}));
  ASSERT_TRUE(r.add({1, test::tokens_of(tok, "The dog"), long_run}));
  bool hit_full = false;
  while (!r.empty()) {
    auto more = r.step();
    if (!more) {
      ASSERT_EQ(more.error().code(), Errc::resource_exhausted) << more.error().to_string();
      hit_full = true;
      r.cancel(1, FinishReason::context_full);
      ctx->seq_clear(1);
    }
  }
  EXPECT_TRUE(hit_full) << "the pool never filled up; the test does not test anything";
  EXPECT_EQ(r.outcome(1)->finish, FinishReason::context_full);
  EXPECT_EQ(r.outcome(0)->tokens, alone);
}

TEST(BatchRunnerControl, RestoreTimeIsReportedForRestoreTokens) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  std::vector<Token> prompt = test::tokens_of(tok, "Once upon a time there was a girl. She had a dog.");
  const size_t history = prompt.size() - 3;
  BatchRunner r(*ctx, tok);
  SequenceJob job{0, prompt, test::greedy(4)};
  job.restore_tokens = history;
  ASSERT_TRUE(r.add(job));
  ASSERT_TRUE(r.run());
  const auto* o = r.outcome(0);
  ASSERT_NE(o, nullptr);
  EXPECT_GT(o->restore_time.count(), 0);
  EXPECT_GE(o->prefill_time.count(), 0);
  job.restore_tokens = prompt.size() + 1;
  ctx->clear_all();
  EXPECT_EQ(test::code_of(r.add(job)), Errc::invalid_argument);
}

}  // namespace
}  // namespace llmd::engine
