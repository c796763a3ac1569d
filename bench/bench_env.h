// What every benchmark scenario gets: where things are and the common settings.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace llmd::bench {

struct BenchEnv {
  std::string models_dir;  // generated models are cached here
  std::string vocab_dir;   // llama.cpp's models/ (for llmd-mkmodel's tokenizers)
  std::string tools_dir;   // llama.cpp's own tools, built from the same pinned source
  std::string log_path;    // the tools' stderr goes here
  int threads = 0;         // the same for llmd and llama.cpp
  bool threads_given = false;  // --threads was on the command line (else: all CPUs, or a scenario's own)
  bool quick = false;      // --quick: a short smoke run where a scenario has one
  int reps = 5;            // repetitions per measurement (llama-bench -r)
  int rounds = 2;          // llmd and llama.cpp alternate this many times, to share any drift
};

// The path of a generated model, writing it first if it is not cached yet.
Result<std::string> ensure_model(const BenchEnv& env, const std::string& shape, const std::string& type);

// About n tokens of plain English words (one token each in these vocabularies, mostly); a different
// text per seed, so two prompts share no more than a word or two of prefix.
std::string words(int n, std::uint64_t seed);

// The real trained models of ../shared/models, by the name tables print.
struct RealModel {
  const char* name;
  const char* file;
};
inline constexpr RealModel kRealModels[] = {{"stories260K", "stories260K.gguf"},
                                            {"TinyStories-656K", "TinyStories-656K-Q8_0.gguf"}};
// Its path under ../shared/models.
std::string real_model_path(const RealModel& model);

}  // namespace llmd::bench
