// Test paths and scratch directories (see test_env.h).
#include "tests/support/test_env.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace llmd::test {
namespace fs = std::filesystem;

namespace {

struct ScratchRoot {
  fs::path root;
  ScratchRoot() {
    std::string tmpl = (fs::temp_directory_path() / "llmd-test.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    root = tmpl;
    // Tests that drop to other uids reach sockets below here.
    fs::permissions(root, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  }
  ~ScratchRoot() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

ScratchRoot& scratch_root() {
  static ScratchRoot r;
  return r;
}

std::string require_file(const fs::path& p) {
  if (!fs::exists(p)) {
    ADD_FAILURE() << "test model missing: " << p << " (run the tests through ctest so the fixtures create it)";
  }
  return p.string();
}

}  // namespace

std::string stories_path() { return require_file(fs::path(LLMD_TEST_SHARED_MODELS_DIR) / "stories260K.gguf"); }
std::string tinystories_path() {
  return require_file(fs::path(LLMD_TEST_SHARED_MODELS_DIR) / "TinyStories-656K-Q8_0.gguf");
}

std::string generated_model(const std::string& name) {
  return require_file(fs::path(LLMD_TEST_MODELS_DIR) / (name + ".gguf"));
}

std::string vocab_dir() { return LLMD_TEST_VOCAB_DIR; }

std::string scratch_dir() {
  static int counter = 0;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "global";
  fs::path p = scratch_root().root / (name + "." + std::to_string(counter++));
  fs::create_directories(p);
  return p.string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace llmd::test
