// llmd-mkmodel: writes a llama-architecture GGUF model with seeded random weights in a named shape.
//
//   llmd-mkmodel --shape smollm2-135m --type q8_0 --out smollm2.gguf
//
// See tools/model_gen/model_gen.h for the shapes and what is in the file.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tools/model_gen/model_gen.h"

namespace {

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: llmd-mkmodel --shape NAME --type TYPE --out FILE [--seed N] [--vocab-dir DIR] [--quiet]\n"
               "  --shape      one of:");
  for (const auto& s : llmd::engine::model_shapes()) {
    std::fprintf(to, " %s", s.name.c_str());
  }
  std::fprintf(to,
               "\n  --type       weight type: f16, q8_0 or q4_0 (default q8_0)\n"
               "  --out        the GGUF file to write (written whole or not at all)\n"
               "  --seed       weight seed (default 42); the same arguments give the same bytes\n"
               "  --vocab-dir  llama.cpp's models/ directory with the ggml-vocab-*.gguf files\n"
               "               (default: the pinned llama.cpp source this build used)\n");
}

}  // namespace

int main(int argc, char** argv) {
  llmd::engine::GenerateModelParams p;
  p.vocab_dir = LLMD_DEFAULT_VOCAB_DIR;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "llmd-mkmodel: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--shape") p.shape = value("--shape");
    else if (a == "--type") p.type = value("--type");
    else if (a == "--out") p.out = value("--out");
    else if (a == "--vocab-dir") p.vocab_dir = value("--vocab-dir");
    else if (a == "--quiet") quiet = true;
    else if (a == "--seed") {
      const char* v = value("--seed");
      char* end = nullptr;
      p.seed = std::strtoull(v, &end, 10);
      if (end == v || *end != '\0') {
        std::fprintf(stderr, "llmd-mkmodel: --seed needs a number, got '%s'\n", v);
        return 2;
      }
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "llmd-mkmodel: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (p.shape.empty() || p.out.empty()) {
    usage(stderr);
    return 2;
  }
  int last_pct = -1;
  auto progress = [&](std::uint64_t done, std::uint64_t total) {
    const int pct = total ? static_cast<int>(done * 100 / total) : 100;
    if (!quiet && pct != last_pct && (pct % 10 == 0)) {
      std::fprintf(stderr, "\rllmd-mkmodel: %s %s: %3d%%", p.shape.c_str(), p.type.c_str(), pct);
      last_pct = pct;
    }
  };
  auto st = llmd::engine::write_random_model(p, progress);
  if (!quiet) std::fprintf(stderr, "\n");
  if (!st) {
    std::fprintf(stderr, "llmd-mkmodel: %s\n", st.error().message().c_str());
    return 1;
  }
  if (!quiet) std::fprintf(stderr, "llmd-mkmodel: wrote %s\n", p.out.c_str());
  return 0;
}
