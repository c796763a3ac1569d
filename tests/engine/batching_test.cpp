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
