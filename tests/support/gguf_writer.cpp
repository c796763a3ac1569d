// Byte-level GGUF writer for tests (see gguf_writer.h). Format: "GGUF", u32 version, u64 n_tensors,
// u64 n_kv, key/value pairs, tensor infos, padding to 32 bytes, tensor data.
#include "tests/support/gguf_writer.h"

#include <cstring>

namespace llmd::test {
namespace {

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void put_str(std::string& out, const std::string& s) {
  put<std::uint64_t>(out, s.size());
  out += s;
}

}  // namespace

std::string make_gguf(const std::vector<std::pair<std::string, std::string>>& string_kv,
                      const std::vector<GgufTensorSpec>& tensors) {
  constexpr std::uint32_t kTypeString = 8;
  constexpr std::uint32_t kTypeF32 = 0;
  std::string out = "GGUF";
  put<std::uint32_t>(out, 3);
  put<std::uint64_t>(out, tensors.size());
  put<std::uint64_t>(out, string_kv.size());
  for (const auto& [k, v] : string_kv) {
    put_str(out, k);
    put<std::uint32_t>(out, kTypeString);
    put_str(out, v);
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    put_str(out, t.name);
    put<std::uint32_t>(out, 1);
    put<std::uint64_t>(out, t.n_elements);
    put<std::uint32_t>(out, kTypeF32);
    put<std::uint64_t>(out, offset);
    offset += (t.n_elements * 4 + 31) / 32 * 32;
  }
  while (out.size() % 32 != 0) out += '\0';
  out.append(offset, '\0');
  return out;
}

}  // namespace llmd::test
