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

namespace llmd::engine {
namespace {

GenerateParams sampled(int32_t max_tokens) {
  GenerateParams p = test::greedy(max_tokens);
  p.sampling.temperature = 0.9f;
  p.sampling.seed = 1234;
  p.ignore_eog = true;
  return p;
}

// Prompt chunks go only where the limits say, as many as they say; the output does not change.
TEST(BatchRunnerLimits, PrefillFollowsTheLimits) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  const auto prompt = test::tokens_of(tok, "Once upon a time there was a little girl who liked to play in the park.");
  ASSERT_GT(prompt.size(), 12u);
  const auto alone = test::run_one(*ctx, tok, {0, prompt, test::greedy(16)}).tokens;
  ctx->clear_all();

  BatchRunner r(*ctx, tok);
  ASSERT_TRUE(r.add({0, prompt, test::greedy(16)}));
  const auto other = test::tokens_of(tok, "The dog");
  ASSERT_TRUE(r.add({1, other, test::greedy(8)}));
  EXPECT_EQ(r.prompt_left(0), prompt.size());
  StepLimits limits{{{0, 4}}, {}};
  ASSERT_TRUE(r.step(&limits));
  EXPECT_EQ(r.prompt_left(0), prompt.size() - 4);
  EXPECT_EQ(r.prompt_left(1), other.size()) << "slot 1 was not named: it gets no prompt tokens";
  EXPECT_EQ(ctx->seq_pos_max(1), -1);
  while (r.prompt_left(0) > 0) {
    const auto before = r.prompt_left(0);
    ASSERT_TRUE(r.step(&limits));
    EXPECT_EQ(r.prompt_left(0), before - std::min<std::uint32_t>(before, 4));
  }
  ASSERT_TRUE(r.run());
  EXPECT_EQ(r.outcome(0)->tokens, alone);
}

// A generation in `hold` sits the step out: no token, its KV untouched; the other decodes, and both
// generate what they generate uninterrupted.
TEST(BatchRunnerLimits, HeldGenerationsSitTheStepOut) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  const auto p0 = test::tokens_of(tok, "Once upon a time there was a little girl");
  const auto p1 = test::tokens_of(tok, "The dog ran");
  const auto alone0 = test::run_one(*ctx, tok, {0, p0, sampled(12)}).tokens;
  ctx->clear_all();
  const auto alone1 = test::run_one(*ctx, tok, {1, p1, test::greedy(12)}).tokens;
  ctx->clear_all();

  BatchRunner r(*ctx, tok);
  ASSERT_TRUE(r.add({0, p0, sampled(12)}));
  ASSERT_TRUE(r.add({1, p1, test::greedy(12)}));
  ASSERT_TRUE(r.step());  // both prompts; both sample their first token
  StepLimits hold0;
  hold0.hold = {0};
  for (int i = 0; i < 5; ++i) {
    const auto pos0 = ctx->seq_pos_max(0), pos1 = ctx->seq_pos_max(1);
    ASSERT_TRUE(r.step(&hold0));
    EXPECT_EQ(ctx->seq_pos_max(0), pos0) << "held: nothing decoded on slot 0";
    EXPECT_EQ(ctx->seq_pos_max(1), pos1 + 1);
  }
  ASSERT_TRUE(r.run());
  EXPECT_EQ(r.outcome(0)->tokens, alone0);
  EXPECT_EQ(r.outcome(1)->tokens, alone1);
}

struct ResumeCase {
  const char* name;
  int steps_before;   // steps run before the suspension
  int kv_kept;        // positions of the KV kept (-1: all of it)
  bool other_slot;    // resume on slot 1 (the KV copied over) instead of slot 0
  bool sampled;       // temperature sampling with a seed instead of greedy
};

class BatchRunnerResume : public ::testing::TestWithParam<ResumeCase> {};

// A job suspended at any point and resumed — its KV kept, partly or wholly lost and replayed, on
// its slot or another — generates exactly what it generates uninterrupted.
TEST_P(BatchRunnerResume, ContinuesExactly) {
  const ResumeCase& c = GetParam();
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  const auto prompt = test::tokens_of(tok, "Once upon a time there was a girl named Lily. She liked to");
  const GenerateParams params = c.sampled ? sampled(40) : test::greedy(40);
  const auto alone = test::run_one(*ctx, tok, {0, prompt, params}).tokens;
  ASSERT_EQ(alone.size(), 40u);
  ctx->clear_all();

  BatchRunner r(*ctx, tok);
  ASSERT_TRUE(r.add({0, prompt, params}));
  StepLimits limits{{{0, 5}}, {}};  // a 5-token prompt chunk per step: early suspensions land mid-prompt
  for (int i = 0; i < c.steps_before; ++i) ASSERT_TRUE(r.step(&limits));
  auto s = r.suspend(0);
  ASSERT_TRUE(s.has_value());
  EXPECT_FALSE(r.active(0));
  EXPECT_EQ(s->first_pos(), 0);
  EXPECT_EQ(s->end_pos(), static_cast<Pos>(s->decoded().size()));
  EXPECT_EQ(ctx->seq_pos_max(0) + 1, s->end_pos());

  std::vector<Token> held(s->decoded());
  SeqId target = 0;
  if (c.other_slot) {
    auto state = ctx->seq_state_get(0);
    ASSERT_TRUE(state);
    ASSERT_TRUE(ctx->seq_state_set(1, *state));
    ctx->seq_clear(0);
    target = 1;
  }
  const std::size_t kept = c.kv_kept < 0 ? held.size() : std::min<std::size_t>(static_cast<std::size_t>(c.kv_kept), held.size());
  if (kept < held.size()) {
    if (kept == 0) {
      ctx->seq_clear(target);
    } else {
      ASSERT_TRUE(ctx->seq_truncate(target, static_cast<Pos>(kept)));
    }
  }
  std::vector<Token> replay(held.begin() + static_cast<std::ptrdiff_t>(kept), held.end());
  ASSERT_TRUE(r.resume(target, std::move(*s), std::move(replay)));
  EXPECT_TRUE(r.active(target));
  ASSERT_TRUE(r.run());
  EXPECT_EQ(r.outcome(target)->tokens, alone);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BatchRunnerResume,
    ::testing::Values(ResumeCase{"MidPromptKeptKv", 2, -1, false, false},
                      ResumeCase{"MidPromptLostKv", 2, 0, false, false},
                      ResumeCase{"GeneratingKeptKv", 8, -1, false, false},
                      ResumeCase{"GeneratingOtherSlot", 8, -1, true, false},
                      ResumeCase{"GeneratingPartlyLost", 9, 7, false, false},
                      ResumeCase{"GeneratingAllLost", 10, 0, true, false},
                      ResumeCase{"SampledPartlyLost", 10, 5, false, true},
                      ResumeCase{"SampledOtherSlot", 12, -1, true, true}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(BatchRunnerResumeErrors, PositionsMustAddUp) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  BatchRunner r(*ctx, tok);
  ASSERT_TRUE(r.add({0, test::tokens_of(tok, "Tom and Sue"), test::greedy(20)}));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(r.step());
  auto s = r.suspend(0);
  ASSERT_TRUE(s);
  EXPECT_FALSE(r.suspend(0).has_value());
  ctx->seq_clear(0);
  std::vector<Token> too_short(s->decoded().begin() + 1, s->decoded().end());
  EXPECT_EQ(test::code_of(r.resume(0, std::move(*s), too_short)), Errc::internal);
  ASSERT_TRUE(r.add({1, test::tokens_of(tok, "The dog"), test::greedy(4)}));
}

// A job that claims what its slot holds is refused when the slot holds something else (the
// engine worker's check against decoding a turn on a slot whose KV was dropped under it).
TEST(BatchRunnerStartChecks, AddRefusesASlotThatDoesNotHoldTheClaimedPositions) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  auto ctx = test::make_context(*model);
  ASSERT_TRUE(ctx);
  BatchRunner r(*ctx, tok);
  const auto prompt = test::tokens_of(tok, "Tom and Sue went to the park");
  ASSERT_TRUE(r.add({0, prompt, test::greedy(1)}));
  ASSERT_TRUE(r.run());
  const Pos held = ctx->seq_pos_max(0) + 1;
  ASSERT_EQ(held, static_cast<Pos>(prompt.size()));
  const auto more = test::tokens_of(tok, "The dog");
  EXPECT_EQ(test::code_of(r.add({0, more, test::greedy(1), 0, held + 3})), Errc::internal);  // claims more
  EXPECT_EQ(test::code_of(r.add({0, more, test::greedy(1), 0, 0})), Errc::internal);         // claims empty
  ctx->seq_clear(0);
  EXPECT_EQ(test::code_of(r.add({0, more, test::greedy(1), 0, held})), Errc::internal);  // KV gone
  ASSERT_TRUE(r.add({0, more, test::greedy(1), 0, 0}));
  ASSERT_TRUE(r.run());
}

}  // namespace
}  // namespace llmd::engine
