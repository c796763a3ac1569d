// Embedder (engine/embedder.h) on the real tiny models: the vectors' shape and norm, determinism,
// batches equal to inputs taken one by one, the limits of an input, cancellation, and running
// beside a generation on the same model.
#include <atomic>
#include <cmath>
#include <filesystem>
#include <thread>

#include "engine/embedder.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::test {
namespace {

using engine::Embedder;
using engine::Token;

std::string model_path(const std::string& name) {
  if (name == "stories260K") return stories_path();
  return (std::filesystem::path(stories_path()).parent_path() / (name + ".gguf")).string();
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.0f : INFINITY;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class EmbedderTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = load_model(model_path(GetParam()));
    ASSERT_TRUE(model_);
    tok_ = std::make_unique<engine::Tokenizer>(*model_);
  }
  std::unique_ptr<Embedder> make(std::uint32_t n_ctx = 256, std::uint32_t n_seq_max = 8) {
    auto e = Embedder::create(*model_, {n_ctx, n_seq_max, 2});
    EXPECT_TRUE(e) << e.error().to_string();
    return e ? std::move(*e) : nullptr;
  }
  std::vector<Token> toks(const std::string& text) { return tokens_of(*tok_, text); }
  std::vector<float> one(Embedder& e, const std::vector<Token>& in) {
    auto r = e.embed(std::span(&in, 1));
    EXPECT_TRUE(r) << r.error().to_string();
    return r && r->size() == 1 ? (*r)[0] : std::vector<float>{};
  }

  std::unique_ptr<engine::Model> model_;
  std::unique_ptr<engine::Tokenizer> tok_;
};

TEST_P(EmbedderTest, VectorsHaveTheModelsWidthAndUnitNorm) {
  auto e = make();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->n_embd(), model_->info().n_embd);
  // Neither tiny model names a pooling: mean, as for any chat model.
  EXPECT_EQ(e->pooling(), engine::Pooling::mean);
  EXPECT_FALSE(e->model_pooling());
  const auto v = one(*e, toks("Once upon a time there was a little dog."));
  ASSERT_EQ(v.size(), static_cast<std::size_t>(model_->info().n_embd));
  EXPECT_NEAR(std::sqrt(dot(v, v)), 1.0, 1e-5);
  EXPECT_NEAR(dot(v, v), 1.0, 1e-5);  // cosine(x, x)
  for (float x : v) EXPECT_TRUE(std::isfinite(x));
}

TEST_P(EmbedderTest, TheSameInputGivesTheSameVector) {
  auto e = make();
  ASSERT_TRUE(e);
  const auto in = toks("The cat sat on the mat.");
  const auto a = one(*e, in);
  one(*e, toks("Something else in between, so that the pool is not left as it was."));
  const auto b = one(*e, in);
  EXPECT_EQ(a, b);
  // A second embedder on the same model agrees too.
  auto e2 = make();
  ASSERT_TRUE(e2);
  EXPECT_EQ(one(*e2, in), a);
}

TEST_P(EmbedderTest, DifferentTextsGiveDifferentVectors) {
  auto e = make();
  ASSERT_TRUE(e);
  const auto a = one(*e, toks("The sun was shining on the green hill."));
  const auto b = one(*e, toks("Tom lost his red ball in the river and cried."));
  EXPECT_NE(a, b);
  EXPECT_LT(dot(a, b), 0.9999);
}

TEST_P(EmbedderTest, ABatchEqualsInputsOneByOne) {
  const std::vector<std::vector<Token>> inputs = {
      toks("Lily went to the park."), toks("A big brown bear lived in the woods and liked honey very much."),
      toks("Hi"), toks("The bird sang a happy song every morning before the sun came up over the hills."),
      toks("Ben and Sue played with blocks.")};
  // One decode for all of them, and small groups in turns (at most 2 inputs, or 40 tokens, each).
  for (auto [n_ctx, n_seq] : {std::pair{256u, 8u}, std::pair{40u, 2u}}) {
    auto batched = make(n_ctx, n_seq);
    auto single = make(n_ctx, 1);
    ASSERT_TRUE(batched && single);
    auto all = batched->embed(inputs);
    ASSERT_TRUE(all) << all.error().to_string();
    ASSERT_EQ(all->size(), inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const auto alone = one(*single, inputs[i]);
      EXPECT_LE(max_diff((*all)[i], alone), 1e-5f) << "input " << i << ", n_ctx " << n_ctx;
    }
  }
}

TEST_P(EmbedderTest, InputsThatCannotBeEmbeddedNameTheInput) {
  auto e = make(32, 4);
  ASSERT_TRUE(e);
  const std::vector<std::vector<Token>> too_long = {toks("Hi"), std::vector<Token>(33, 5)};
  auto r = e->embed(too_long);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_EQ(r.error().reason(), Reason::context_length_exceeded);
  EXPECT_EQ(r.error().param(), "input");
  EXPECT_EQ(r.error().detail().limit, 32u);
  EXPECT_EQ(r.error().detail().actual, 33u);
  // Exactly the context fits.
  EXPECT_TRUE(e->embed(std::vector<std::vector<Token>>{std::vector<Token>(32, 5)}));

  for (const auto& bad : {std::vector<Token>{}, std::vector<Token>{1, -1}, std::vector<Token>{1, model_->info().n_vocab}}) {
    auto b = e->embed(std::span(&bad, 1));
    ASSERT_FALSE(b);
    EXPECT_EQ(b.error().code(), Errc::invalid_argument) << b.error().to_string();
    EXPECT_EQ(b.error().param(), "input");
  }
}

TEST_P(EmbedderTest, ACancelledRequestStops) {
  auto e = make();
  ASSERT_TRUE(e);
  std::atomic<bool> cancel{true};
  const std::vector<std::vector<Token>> inputs = {toks("One"), toks("Two")};
  auto r = e->embed(inputs, &cancel);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::cancelled);
  // The embedder is still usable afterwards.
  cancel = false;
  EXPECT_TRUE(e->embed(inputs, &cancel));
}

TEST_P(EmbedderTest, RunsWhileAnotherThreadGenerates) {
  auto e = make();
  auto ctx = make_context(*model_, 2, 512);
  ASSERT_TRUE(e && ctx);
  const auto in = toks("The little fox ran to the tall tree.");
  const auto alone = one(*e, in);
  std::thread gen([&] {
    engine::SequenceJob job;
    job.seq = 0;
    job.prompt = toks("Once upon a time");
    job.params = greedy(64);
    job.params.ignore_eog = true;
    run_one(*ctx, *tok_, std::move(job));
  });
  for (int i = 0; i < 20; ++i) EXPECT_EQ(one(*e, in), alone) << i;
  gen.join();
}

TEST(EmbedderContext, FitsTheMemoryBudget) {
  engine::ModelInfo chat;  // a 1B chat model's shape: 32 heads, a 128k vocabulary, 32 KiB of f16 KV per token
  chat.n_head = 32;
  chat.n_vocab = 128256;
  chat.kv_bytes_per_token_f16 = 32768;
  EXPECT_EQ(engine::embedding_context_size(chat, 4096, 512ull << 20), 768u);
  EXPECT_LE(engine::embedder_bytes(chat, 768), 512ull << 20);
  EXPECT_GT(engine::embedder_bytes(chat, 1024), 512ull << 20);
  engine::ModelInfo bert;  // a BERT-sized embedding model
  bert.n_head = 12;
  bert.n_vocab = 30522;
  bert.kv_bytes_per_token_f16 = 36864;
  EXPECT_EQ(engine::embedding_context_size(bert, 2048, 512ull << 20), 1792u);
  EXPECT_EQ(engine::embedding_context_size(bert, 512, 512ull << 20), 512u);
  EXPECT_EQ(engine::embedding_context_size(bert, 300, 512ull << 20), 300u);  // the limit when it fits
  EXPECT_EQ(engine::embedding_context_size(chat, 4096, 1), 256u);             // never below 256
  EXPECT_EQ(engine::embedding_context_size(chat, 100, 1), 100u);
}

INSTANTIATE_TEST_SUITE_P(Models, EmbedderTest, ::testing::Values("stories260K", "TinyStories-656K-Q8_0"),
                         [](const auto& p) { return param_name(p.param); });

}  // namespace
}  // namespace llmd::test
