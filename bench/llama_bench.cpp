// llama-bench runs (see llama_bench.h).
#include "bench/llama_bench.h"

#include "bench/process.h"

namespace llmd::bench {

Result<nlohmann::json> llama_bench(const BenchEnv& env, const std::string& model, const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {env.tools_dir + "/llama-bench", "-m", model, "-t", std::to_string(env.threads),
                                   "-r", std::to_string(env.reps), "-fa", "auto", "-o", "json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto text = run_capture(argv, env.log_path);
  if (!text) return text.error();
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_array() || j.empty()) return Error(Errc::internal, "cannot parse llama-bench output");
  return j;
}

std::vector<double> bench_samples(const nlohmann::json& test) {
  return test.value("samples_ts", std::vector<double>{});
}

}  // namespace llmd::bench
