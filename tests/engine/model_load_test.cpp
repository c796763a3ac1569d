// Loading models: the real tiny model, generated models, and every kind of bad file.
#include <grp.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "engine/model.h"
#include "tests/engine/engine_test_util.h"
#include "tests/support/gguf_writer.h"

namespace llmd::engine {
namespace {

namespace fs = std::filesystem;
using test::scratch_dir;
using test::write_file;

TEST(ModelLoad, Stories260KLoadsWithItsFacts) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  const ModelInfo& i = m->info();
  EXPECT_EQ(i.architecture, "llama");
  EXPECT_EQ(i.n_layer, 5);
  EXPECT_EQ(i.n_embd, 64);
  EXPECT_EQ(i.n_head, 8);
  EXPECT_EQ(i.n_head_kv, 4);
  EXPECT_EQ(i.n_ctx_train, 2048);
  EXPECT_EQ(i.n_vocab, 512);
  EXPECT_FALSE(i.has_chat_template);
  EXPECT_TRUE(i.supports_seq_state);
  // 5 layers x (K + V) x 4 KV heads x 8 dims x 2 bytes
  EXPECT_EQ(i.kv_bytes_per_token_f16, 5u * 2 * 4 * 8 * 2);
  EXPECT_EQ(m->kv_bytes_per_token("f16", "f16"), i.kv_bytes_per_token_f16);
  EXPECT_EQ(i.file_size, 1185376u);
  EXPECT_EQ(i.fingerprint.rfind("1185376-", 0), 0u) << i.fingerprint;
  auto again = test::load_model(test::stories_path());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->info().fingerprint, i.fingerprint);
  auto other = test::load_model(test::generated_model("tiny-q8_0"));
  ASSERT_TRUE(other);
  EXPECT_NE(other->info().fingerprint, i.fingerprint);
}

TEST(ModelLoad, GeneratedSmolLM2ShapeHasRealShapeFacts) {
  auto m = test::load_model(test::generated_model("smollm2-135m-q8_0"));
  ASSERT_TRUE(m);
  const ModelInfo& i = m->info();
  EXPECT_EQ(i.n_layer, 30);
  EXPECT_EQ(i.n_embd, 576);
  EXPECT_EQ(i.n_head, 9);
  EXPECT_EQ(i.n_head_kv, 3);
  EXPECT_EQ(i.n_vocab, 49152);
  EXPECT_EQ(i.file_type, "Q8_0");
  EXPECT_TRUE(i.has_chat_template);
  EXPECT_EQ(i.kv_bytes_per_token_f16, 23040u);  // the design's "about 23 KB per token"
}

class BadModelFile : public ::testing::Test {
 protected:
  void expect_error(const std::string& path, Errc code, const std::string& needle) {
    auto m = Model::load({path});
    ASSERT_FALSE(m) << path << " loaded but should not have";
    EXPECT_EQ(m.error().code(), code) << m.error().to_string();
    EXPECT_NE(m.error().message().find(needle), std::string::npos)
        << "message '" << m.error().message() << "' does not mention '" << needle << "'";
  }
  std::string dir_ = scratch_dir();
};

TEST_F(BadModelFile, MissingFile) { expect_error(dir_ + "/nope.gguf", Errc::not_found, "not found"); }

TEST_F(BadModelFile, Directory) { expect_error(dir_, Errc::invalid_argument, "directory"); }

TEST_F(BadModelFile, EmptyFile) {
  write_file(dir_ + "/empty.gguf", "");
  expect_error(dir_ + "/empty.gguf", Errc::invalid_argument, "empty");
}

TEST_F(BadModelFile, NotGguf) {
  write_file(dir_ + "/text.gguf", "this is a text file, not a model\n");
  expect_error(dir_ + "/text.gguf", Errc::invalid_argument, "not a GGUF");
}

TEST_F(BadModelFile, GitLfsPointer) {
  write_file(dir_ + "/lfs.gguf",
             "version https://git-lfs.github.com/spec/v1\noid sha256:270cba1b\nsize 1185376\n");
  expect_error(dir_ + "/lfs.gguf", Errc::invalid_argument, "Git LFS");
}

TEST_F(BadModelFile, TruncatedInTensorData) {
  const std::string whole = test::read_file(test::stories_path());
  write_file(dir_ + "/half.gguf", whole.substr(0, whole.size() / 2));
  expect_error(dir_ + "/half.gguf", Errc::corrupt, "truncated");
}

TEST_F(BadModelFile, TruncatedInHeader) {
  const std::string whole = test::read_file(test::stories_path());
  for (size_t n : {size_t{5}, size_t{40}, size_t{300}, size_t{5000}}) {
    write_file(dir_ + "/head.gguf", whole.substr(0, n));
    auto m = Model::load({dir_ + "/head.gguf"});
    ASSERT_FALSE(m) << n;
    EXPECT_EQ(m.error().code(), Errc::corrupt) << n << ": " << m.error().to_string();
  }
}

TEST_F(BadModelFile, UnknownArchitecture) {
  write_file(dir_ + "/arch.gguf", test::make_gguf({{"general.architecture", "frobnicator"}}, {{"w.weight"}}));
  expect_error(dir_ + "/arch.gguf", Errc::unsupported, "frobnicator");
}

TEST_F(BadModelFile, NoArchitecture) {
  write_file(dir_ + "/noarch.gguf", test::make_gguf({{"general.name", "x"}}, {{"w.weight"}}));
  expect_error(dir_ + "/noarch.gguf", Errc::unsupported, "architecture");
}

TEST_F(BadModelFile, KnownArchitectureMissingItsHyperparameters) {
  write_file(dir_ + "/llama.gguf", test::make_gguf({{"general.architecture", "llama"}}, {{"token_embd.weight"}}));
  auto m = Model::load({dir_ + "/llama.gguf"});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("cannot load model"), std::string::npos) << m.error().message();
}

TEST_F(BadModelFile, VocabularyOnlyFile) {
  expect_error(test::vocab_dir() + "/ggml-vocab-llama-spm.gguf", Errc::unsupported, "no tensors");
}

// Root reads any file, so as root the load runs in a child that has dropped to "nobody".
TEST_F(BadModelFile, UnreadableFile) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::others_exec | fs::perms::group_exec);
  const std::string path = dir_ + "/secret.gguf";
  write_file(path, test::read_file(test::stories_path()));
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  auto attempt = [&path] {
    if (::geteuid() == 0 && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      std::_Exit(3);
    }
    auto m = Model::load({path});
    const bool ok = !m && m.error().code() == Errc::permission_denied &&
                    m.error().message().find("secret.gguf") != std::string::npos;
    std::_Exit(ok ? 0 : 1);
  };
  EXPECT_EXIT(attempt(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace llmd::engine
