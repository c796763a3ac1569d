// The large generated shape: writes a llama-3.2-1b-shaped model and runs it.
#include <filesystem>

#include "tools/model_gen/model_gen.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

TEST(ModelGenSlow, Llama32OneBillionShapeGeneratesLoadsAndGenerates) {
  GenerateModelParams p;
  p.shape = "llama-3.2-1b";
  p.type = "q4_0";
  p.out = test::scratch_dir() + "/llama-3.2-1b-q4_0.gguf";
  p.vocab_dir = test::vocab_dir();
  ASSERT_TRUE(write_random_model(p));
  auto m = test::load_model(p.out);
  ASSERT_TRUE(m);
  const ModelInfo& i = m->info();
  EXPECT_EQ(i.n_layer, 16);
  EXPECT_EQ(i.n_embd, 2048);
  EXPECT_EQ(i.n_head, 32);
  EXPECT_EQ(i.n_head_kv, 8);
  EXPECT_EQ(i.n_vocab, 128256);
  EXPECT_GT(i.n_params, 1'000'000'000u);
  auto ctx = test::make_context(*m, 1, 256);
  ASSERT_TRUE(ctx);
  Tokenizer tok(*m);
  const auto o = test::run_one(*ctx, tok, {0, test::tokens_of(tok, "Hello"), test::greedy(4)});
  EXPECT_EQ(o.tokens.size(), 4u);
  std::filesystem::remove(p.out);
}

}  // namespace
}  // namespace llmd::engine
