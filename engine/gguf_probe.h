// Preflight checks of a model file before llama.cpp sees it, so that a missing, empty, truncated or
// foreign file gets a precise error instead of whatever llama.cpp makes of it.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace llmd::engine {

struct GgufSummary {
  std::uint32_t version = 0;
  std::int64_t n_tensors = 0;
  std::int64_t n_kv = 0;
  std::string architecture;  // general.architecture
  std::string name;          // general.name, may be empty
  std::uint64_t file_size = 0;
  std::uint64_t data_end = 0;  // offset just past the last tensor's data
};

// Checks, in order: the path exists and is a regular, readable file; it is not empty; it starts with
// the GGUF magic (a Git LFS pointer is named as such); its header parses; every tensor's data lies
// within the file; it names an architecture. Errors: not_found, permission_denied,
// invalid_argument (not a model file), corrupt (truncated/damaged), unsupported (no architecture).
Result<GgufSummary> probe_gguf(const std::string& path);

}  // namespace llmd::engine
