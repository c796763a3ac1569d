// Generation on one sequence: determinism, sampling, stopping and limits.
#include <limits>
#include <set>

#include "engine/generation.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

using test::greedy;
using test::run_one;
using test::tokens_of;

class GenerationTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string& which = GetParam();
    model_ = test::load_model(which == "stories260K" ? test::stories_path() : test::generated_model(which));
    ASSERT_TRUE(model_);
    ctx_ = test::make_context(*model_);
    ASSERT_TRUE(ctx_);
    tok_ = std::make_unique<Tokenizer>(*model_);
  }
  SequenceOutcome run(SequenceJob job) {
    ctx_->seq_clear(job.seq);
    return run_one(*ctx_, *tok_, std::move(job));
  }
  std::unique_ptr<Model> model_;
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(GenerationTest, GreedyGenerationIsIdenticalAcrossRuns) {
  const auto prompt = tokens_of(*tok_, "Once upon a time");
  const auto a = run({0, prompt, greedy(48)});
  const auto b = run({0, prompt, greedy(48)});
  ASSERT_FALSE(a.tokens.empty());
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.n_prompt, static_cast<int32_t>(prompt.size()));
  // A fresh context gives the same tokens too.
  auto other = test::make_context(*model_);
  ASSERT_TRUE(other);
  EXPECT_EQ(run_one(*other, *tok_, {1, prompt, greedy(48)}).tokens, a.tokens);
}

TEST_P(GenerationTest, SameSeedReproducesAndOtherSeedsDiffer) {
  const auto prompt = tokens_of(*tok_, "The little dog");
  GenerateParams p;
  p.max_tokens = 32;
  p.sampling.temperature = 1.5f;
  p.sampling.top_k = 0;
  p.sampling.top_p = 1.0f;
  p.sampling.min_p = 0.0f;
  p.sampling.seed = 1234;
  const auto a = run({0, prompt, p});
  const auto b = run({0, prompt, p});
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.seed, 1234u);
  std::set<std::vector<Token>> outcomes;
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    p.sampling.seed = seed;
    outcomes.insert(run({0, prompt, p}).tokens);
  }
  EXPECT_GT(outcomes.size(), 1u) << "different seeds all gave the same tokens";
}

TEST_P(GenerationTest, MaxTokensStopsGeneration) {
  const auto o = run({0, tokens_of(*tok_, "One day"), greedy(5)});
  if (o.finish == FinishReason::eog) {
    EXPECT_LE(o.tokens.size(), 5u);
  } else {
    EXPECT_EQ(o.finish, FinishReason::length);
    EXPECT_EQ(o.tokens.size(), 5u);
  }
}

TEST_P(GenerationTest, StopStringCutsTheTextBeforeIt) {
  const auto prompt = tokens_of(*tok_, "Once upon a time");
  const auto full = run({0, prompt, greedy(40)});
  ASSERT_GT(full.text.size(), 12u);
  // Take a piece from the middle of what the model says as the stop string.
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  const size_t at = full.text.find(stop);
  auto params = greedy(40);
  params.stop = {stop};
  const auto cut = run({0, prompt, params});
  EXPECT_EQ(cut.finish, FinishReason::stop);
  EXPECT_EQ(cut.text, full.text.substr(0, at));
  EXPECT_LE(cut.tokens.size(), full.tokens.size());
}

TEST_P(GenerationTest, RepetitionPenaltyChangesGreedyOutput) {
  const auto prompt = tokens_of(*tok_, "Once upon a time");
  auto plain = greedy(64);
  auto penalised = greedy(64);
  penalised.sampling.repeat_penalty = 1.8f;
  penalised.sampling.repeat_last_n = 64;
  const auto a = run({0, prompt, plain});
  const auto b = run({0, prompt, penalised});
  const auto distinct = [](const std::vector<Token>& t) { return std::set<Token>(t.begin(), t.end()).size(); };
  EXPECT_NE(a.tokens, b.tokens);
  EXPECT_GE(distinct(b.tokens), distinct(a.tokens));
}

TEST_P(GenerationTest, FullContextEndsGenerationCleanly) {
  auto small = test::make_context(*model_, 1, 32);  // llama.cpp rounds the size up (to 256)
  ASSERT_TRUE(small);
  const auto n_ctx = static_cast<int32_t>(small->n_ctx());
  auto params = greedy(n_ctx + 50);
  params.sampling.repeat_penalty = 1.3f;  // keep stories260K from ending its story early
  const auto o = run_one(*small, *tok_, {0, tokens_of(*tok_, "Once upon a time"), params});
  if (o.finish != FinishReason::eog) {
    EXPECT_EQ(o.finish, FinishReason::context_full);
    EXPECT_EQ(small->seq_pos_max(0), n_ctx - 1);
  }
  // A prompt longer than the whole context ends the same way, without a decode error.
  small->clear_all();
  std::vector<Token> long_prompt(static_cast<size_t>(n_ctx) + 10, tok_->bos());
  const auto p = run_one(*small, *tok_, {0, long_prompt, greedy(4)});
  EXPECT_EQ(p.finish, FinishReason::context_full);
  EXPECT_TRUE(p.tokens.empty());
}

TEST_P(GenerationTest, BadRequestsAreRefused) {
  BatchRunner r(*ctx_, *tok_);
  const auto prompt = tokens_of(*tok_, "Hello");
  EXPECT_EQ(test::code_of(r.add({0, {}, greedy(4)})), Errc::invalid_argument);
  EXPECT_EQ(test::code_of(r.add({99, prompt, greedy(4)})), Errc::invalid_argument);
  EXPECT_EQ(test::code_of(r.add({0, {tok_->n_vocab()}, greedy(4)})), Errc::invalid_argument);
  EXPECT_EQ(test::code_of(r.add({0, prompt, greedy(0)})), Errc::invalid_argument);
  auto nan = greedy(4);
  nan.sampling.temperature = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(test::code_of(r.add({0, prompt, nan})), Errc::invalid_argument);
  auto top_p = greedy(4);
  top_p.sampling.top_p = 0.0f;
  EXPECT_EQ(test::code_of(r.add({0, prompt, top_p})), Errc::invalid_argument);
  ASSERT_TRUE(r.add({0, prompt, greedy(4)}));
  EXPECT_EQ(test::code_of(r.add({0, prompt, greedy(4)})), Errc::invalid_argument);  // slot busy
}

INSTANTIATE_TEST_SUITE_P(Models, GenerationTest, ::testing::Values("stories260K", "tiny-q8_0"),
                         [](const auto& p) { return test::param_name(p.param); });

}  // namespace
}  // namespace llmd::engine
