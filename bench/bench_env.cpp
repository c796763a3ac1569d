// Cached generated models for the benchmarks (see bench_env.h).
#include "bench/bench_env.h"

#include <cstdio>
#include <filesystem>

#include "daemon/engine/model_gen.h"

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

}  // namespace llmd::bench
