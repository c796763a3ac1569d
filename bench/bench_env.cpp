// Cached generated models and prompt text for the benchmarks (see bench_env.h).
#include "bench/bench_env.h"

#include <cstdio>
#include <filesystem>
#include <random>

#include "tools/model_gen/model_gen.h"

namespace llmd::bench {

Result<std::string> ensure_model(const BenchEnv& env, const std::string& shape, const std::string& type) {
  const std::string path = env.models_dir + "/" + shape + "-" + type + ".gguf";
  if (std::filesystem::exists(path)) return path;
  std::error_code ec;
  std::filesystem::create_directories(env.models_dir, ec);
  std::fprintf(stderr, "llmd-bench: generating %s\n", path.c_str());
  engine::GenerateModelParams p;
  p.shape = shape;
  p.type = type;
  p.out = path;
  p.vocab_dir = env.vocab_dir;
  LLMD_TRY_STATUS(engine::write_random_model(p));
  return path;
}

std::string real_model_path(const RealModel& model) {
  return std::string(LLMD_BENCH_SHARED_MODELS_DIR) + "/" + model.file;
}

std::string words(int n, std::uint64_t seed) {
  static const char* const kWords[] = {"the", "cat", "sat", "on", "a", "mat", "and", "then", "we", "saw", "big",
                                       "red", "dog", "run", "to", "house", "in", "town", "with", "old", "man",
                                       "who", "had", "small", "green", "car", "that", "was", "very", "fast"};
  std::mt19937_64 rng(seed);
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (i > 0) out += ' ';
    out += kWords[rng() % (sizeof kWords / sizeof kWords[0])];
  }
  return out;
}

}  // namespace llmd::bench
