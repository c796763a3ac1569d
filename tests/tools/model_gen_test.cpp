// llmd-mkmodel's generator: deterministic files that load as the named shape.
#include <filesystem>

#include "tools/model_gen/model_gen.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

GenerateModelParams params(const std::string& shape, const std::string& type, const std::string& out) {
  GenerateModelParams p;
  p.shape = shape;
  p.type = type;
  p.out = out;
  p.vocab_dir = test::vocab_dir();
  return p;
}

TEST(ModelGen, SameParametersGiveTheSameBytes) {
  const std::string dir = test::scratch_dir();
  ASSERT_TRUE(write_random_model(params("tiny", "q4_0", dir + "/a.gguf")));
  ASSERT_TRUE(write_random_model(params("tiny", "q4_0", dir + "/b.gguf")));
  EXPECT_EQ(test::read_file(dir + "/a.gguf"), test::read_file(dir + "/b.gguf"));
  auto other_seed = params("tiny", "q4_0", dir + "/c.gguf");
  other_seed.seed = 7;
  ASSERT_TRUE(write_random_model(other_seed));
  EXPECT_NE(test::read_file(dir + "/a.gguf"), test::read_file(dir + "/c.gguf"));
}

TEST(ModelGen, WeightTypesChangeSizeAndLoad) {
  const std::string dir = test::scratch_dir();
  uintmax_t prev = UINTMAX_MAX;
  for (const char* type : {"f16", "q8_0", "q4_0"}) {
    const std::string out = dir + "/tiny-" + type + ".gguf";
    ASSERT_TRUE(write_random_model(params("tiny", type, out)));
    const auto size = std::filesystem::file_size(out);
    EXPECT_LT(size, prev) << type;
    prev = size;
    auto m = test::load_model(out);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->info().n_layer, 2);
    EXPECT_EQ(m->info().n_vocab, 32000);
    EXPECT_TRUE(m->info().has_chat_template);
  }
}

TEST(ModelGen, BadParametersAreRefusedAndLeaveNoFile) {
  const std::string dir = test::scratch_dir();
  EXPECT_EQ(write_random_model(params("huge", "q8_0", dir + "/x.gguf")).error().code(), Errc::invalid_argument);
  EXPECT_EQ(write_random_model(params("tiny", "q3_k", dir + "/x.gguf")).error().code(), Errc::invalid_argument);
  auto no_vocab = params("tiny", "q8_0", dir + "/x.gguf");
  no_vocab.vocab_dir = dir + "/missing";
  EXPECT_EQ(write_random_model(no_vocab).error().code(), Errc::not_found);
  EXPECT_EQ(write_random_model(params("tiny", "q8_0", dir + "/no/such/dir/x.gguf")).error().code(), Errc::io_error);
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

TEST(ModelGen, ShapesAreTheRealModelsShapes) {
  const auto& shapes = model_shapes();
  ASSERT_EQ(shapes.size(), 3u);
  const auto& smol = shapes[1];
  EXPECT_EQ(smol.name, "smollm2-135m");
  EXPECT_EQ(std::tie(smol.n_embd, smol.n_layer, smol.n_head, smol.n_head_kv, smol.n_ff),
            std::make_tuple(576, 30, 9, 3, 1536));
  const auto& llama = shapes[2];
  EXPECT_EQ(llama.name, "llama-3.2-1b");
  EXPECT_EQ(std::tie(llama.n_embd, llama.n_layer, llama.n_head, llama.n_head_kv, llama.n_ff),
            std::make_tuple(2048, 16, 32, 8, 8192));
}

}  // namespace
}  // namespace llmd::engine
