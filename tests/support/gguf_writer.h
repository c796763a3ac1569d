// Hand-made GGUF files for error-path tests: a byte-level writer, so tests can produce headers that
// ggml's own writer would refuse to (unknown architectures, missing keys).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace llmd::test {

struct GgufTensorSpec {
  std::string name;
  std::uint64_t n_elements = 32;  // one f32 dimension
};

// A GGUF v3 file with string metadata and f32 tensors filled with zeros.
std::string make_gguf(const std::vector<std::pair<std::string, std::string>>& string_kv,
                      const std::vector<GgufTensorSpec>& tensors);

}  // namespace llmd::test
