// GGUF preflight checks (see gguf_probe.h).
#include "engine/gguf_probe.h"

#include <gguf.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "engine/backend.h"

namespace llmd::engine {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
struct GgufFree {
  void operator()(gguf_context* c) const { gguf_free(c); }
};

std::string hex_bytes(const unsigned char* p, size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kHex[p[i] >> 4];
    s += kHex[p[i] & 15];
  }
  return s;
}

}  // namespace

Result<GgufSummary> probe_gguf(const std::string& path) {
  ensure_backend();
  GgufSummary out;

  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return Error(Errc::not_found, "model file not found: " + path);
    return errno_error(err, "cannot access model file " + path);
  }
  if (S_ISDIR(st.st_mode)) return Error(Errc::invalid_argument, "model path is a directory: " + path);
  if (!S_ISREG(st.st_mode)) return Error(Errc::invalid_argument, "model path is not a regular file: " + path);
  out.file_size = static_cast<std::uint64_t>(st.st_size);

  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) return errno_error(errno, "cannot open model file " + path);
  if (out.file_size == 0) return Error(Errc::invalid_argument, "model file is empty: " + path);

  unsigned char head[24] = {};
  const size_t got = std::fread(head, 1, sizeof head, f.get());
  if (got >= 7 && std::memcmp(head, "version", 7) == 0) {
    return Error(Errc::invalid_argument,
                 "model file is a Git LFS pointer, not the model itself (fetch the real file): " + path);
  }
  if (got < 4 || std::memcmp(head, "GGUF", 4) != 0) {
    return Error(Errc::invalid_argument, "not a GGUF model file (first bytes " +
                                             hex_bytes(head, got < 4 ? got : 4) + ", expected 'GGUF'): " + path);
  }
  if (got < 24) {
    return Error(Errc::corrupt, "GGUF file is truncated inside its header (" + std::to_string(out.file_size) +
                                    " bytes): " + path);
  }

  clear_llama_errors();
  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  std::unique_ptr<gguf_context, GgufFree> ctx(gguf_init_from_file(path.c_str(), params));
  if (!ctx) {
    std::string why = take_llama_errors();
    return Error(Errc::corrupt, "GGUF header of " + path + " is damaged or truncated" +
                                    (why.empty() ? std::string() : " (" + why + ")"));
  }
  out.version = gguf_get_version(ctx.get());
  out.n_tensors = gguf_get_n_tensors(ctx.get());
  out.n_kv = gguf_get_n_kv(ctx.get());

  const std::uint64_t data_offset = gguf_get_data_offset(ctx.get());
  out.data_end = data_offset;
  for (std::int64_t i = 0; i < out.n_tensors; ++i) {
    const std::uint64_t end = data_offset + gguf_get_tensor_offset(ctx.get(), i) + gguf_get_tensor_size(ctx.get(), i);
    if (end > out.data_end) out.data_end = end;
  }
  if (out.data_end > out.file_size) {
    return Error(Errc::corrupt, "model file is truncated: its tensors need " + std::to_string(out.data_end) +
                                    " bytes but the file has " + std::to_string(out.file_size) + ": " + path);
  }

  const std::int64_t arch_key = gguf_find_key(ctx.get(), "general.architecture");
  if (arch_key < 0 || gguf_get_kv_type(ctx.get(), arch_key) != GGUF_TYPE_STRING) {
    return Error(Errc::unsupported, "GGUF file names no model architecture (general.architecture): " + path);
  }
  out.architecture = gguf_get_val_str(ctx.get(), arch_key);
  const std::int64_t name_key = gguf_find_key(ctx.get(), "general.name");
  if (name_key >= 0 && gguf_get_kv_type(ctx.get(), name_key) == GGUF_TYPE_STRING) {
    out.name = gguf_get_val_str(ctx.get(), name_key);
  }
  if (out.n_tensors == 0) {
    return Error(Errc::unsupported, "GGUF file has no tensors (a vocabulary-only file?): " + path);
  }
  return out;
}

}  // namespace llmd::engine
