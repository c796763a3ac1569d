// Writing random-weight llama GGUF models (see model_gen.h).
#include "tools/model_gen/model_gen.h"

#include <ggml.h>
#include <gguf.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string_view>

#include "engine/backend.h"

namespace llmd::engine {
namespace {

// Minimal jinja templates that llama_chat_apply_template recognises by their markers.
constexpr const char* kChatmlTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
constexpr const char* kLlama3Template =
    "{% for message in messages %}{{'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
    "message['content'] | trim + '<|eot_id|>'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

struct GgufFree {
  void operator()(gguf_context* c) const { gguf_free(c); }
};
struct GgmlFree {
  void operator()(ggml_context* c) const { ggml_free(c); }
};
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// splitmix64: a tiny, well-distributed PRNG so that output depends only on the seed.
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float uniform() { return static_cast<float>(static_cast<double>(next() >> 11) * 0x1.0p-52 - 1.0); }
};

std::uint64_t hash_name(std::string_view s, std::uint64_t seed) {
  std::uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

struct TensorSpec {
  std::string name;
  std::int64_t ne0, ne1;  // ne1 == 1: a vector
  ggml_type type;
  float scale;            // uniform weights in [-scale, scale); 0: all ones (norms)
};

std::vector<TensorSpec> tensor_specs(const ModelShape& s, std::int32_t n_vocab, ggml_type wtype) {
  const std::int64_t head_dim = s.n_embd / s.n_head;
  const std::int64_t n_kv = head_dim * s.n_head_kv;
  // Uniform[-a, a) has standard deviation a/sqrt(3): a = 0.035 gives the customary 0.02.
  const float a = 0.035f;
  std::vector<TensorSpec> v;
  v.push_back({"token_embd.weight", s.n_embd, n_vocab, wtype, a});
  v.push_back({"output_norm.weight", s.n_embd, 1, GGML_TYPE_F32, 0.0f});
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    v.push_back({p + "attn_norm.weight", s.n_embd, 1, GGML_TYPE_F32, 0.0f});
    v.push_back({p + "attn_q.weight", s.n_embd, s.n_embd, wtype, a});
    v.push_back({p + "attn_k.weight", s.n_embd, n_kv, wtype, a});
    v.push_back({p + "attn_v.weight", s.n_embd, n_kv, wtype, a});
    v.push_back({p + "attn_output.weight", s.n_embd, s.n_embd, wtype, a});
    v.push_back({p + "ffn_norm.weight", s.n_embd, 1, GGML_TYPE_F32, 0.0f});
    v.push_back({p + "ffn_gate.weight", s.n_embd, s.n_ff, wtype, a});
    v.push_back({p + "ffn_up.weight", s.n_embd, s.n_ff, wtype, a});
    v.push_back({p + "ffn_down.weight", s.n_ff, s.n_embd, wtype, a});
  }
  return v;
}

Status write_all(std::FILE* f, const void* data, size_t n, const std::string& path) {
  if (n > 0 && std::fwrite(data, 1, n, f) != n) return errno_error(errno, "writing " + path);
  return {};
}

}  // namespace

const std::vector<ModelShape>& model_shapes() {
  static const std::vector<ModelShape> shapes = {
      {"tiny", 64, 2, 4, 2, 192, 2048, 10000.0f, "ggml-vocab-llama-spm.gguf", kChatmlTemplate},
      {"smollm2-135m", 576, 30, 9, 3, 1536, 8192, 100000.0f, "ggml-vocab-starcoder.gguf", kChatmlTemplate},
      {"llama-3.2-1b", 2048, 16, 32, 8, 8192, 131072, 500000.0f, "ggml-vocab-llama-bpe.gguf", kLlama3Template},
  };
  return shapes;
}

Status write_random_model(const GenerateModelParams& params, const ModelGenProgress& progress) {
  ensure_backend();
  const ModelShape* shape = nullptr;
  std::string names;
  for (const auto& s : model_shapes()) {
    if (s.name == params.shape) shape = &s;
    names += (names.empty() ? "" : ", ") + s.name;
  }
  if (shape == nullptr) return Error(Errc::invalid_argument, "unknown shape '" + params.shape + "' (known: " + names + ")");

  ggml_type wtype;
  std::uint32_t ftype;
  if (params.type == "f16") { wtype = GGML_TYPE_F16; ftype = 1; }
  else if (params.type == "q8_0") { wtype = GGML_TYPE_Q8_0; ftype = 7; }
  else if (params.type == "q4_0") { wtype = GGML_TYPE_Q4_0; ftype = 2; }
  else return Error(Errc::invalid_argument, "unknown weight type '" + params.type + "' (known: f16, q8_0, q4_0)");
  if (params.out.empty()) return Error(Errc::invalid_argument, "no output file given");

  const std::string vocab_path = params.vocab_dir + "/" + shape->vocab;
  if (::access(vocab_path.c_str(), R_OK) != 0) return errno_error(errno, "vocabulary file " + vocab_path);
  std::unique_ptr<gguf_context, GgufFree> vocab(gguf_init_from_file(vocab_path.c_str(), {true, nullptr}));
  if (!vocab) return Error(Errc::corrupt, "cannot read vocabulary file " + vocab_path);
  const std::int64_t tokens_key = gguf_find_key(vocab.get(), "tokenizer.ggml.tokens");
  if (tokens_key < 0) return Error(Errc::corrupt, "vocabulary file has no tokens: " + vocab_path);
  const auto n_vocab = static_cast<std::int32_t>(gguf_get_arr_n(vocab.get(), tokens_key));

  std::unique_ptr<gguf_context, GgufFree> g(gguf_init_empty());
  // The tokenizer: every tokenizer.* key of the vocabulary file, nothing else from it.
  gguf_set_kv(g.get(), vocab.get());
  for (std::int64_t i = gguf_get_n_kv(g.get()) - 1; i >= 0; --i) {
    const std::string key = gguf_get_key(g.get(), i);
    if (key.rfind("tokenizer.", 0) != 0) gguf_remove_key(g.get(), key.c_str());
  }
  gguf_remove_key(g.get(), "tokenizer.chat_template");
  if (!shape->chat_template.empty()) gguf_set_val_str(g.get(), "tokenizer.chat_template", shape->chat_template.c_str());

  const std::string name = "llmd-generated " + shape->name + " " + params.type;
  gguf_set_val_str(g.get(), "general.architecture", "llama");
  gguf_set_val_str(g.get(), "general.name", name.c_str());
  gguf_set_val_u32(g.get(), "general.file_type", ftype);
  gguf_set_val_u32(g.get(), "llama.context_length", static_cast<std::uint32_t>(shape->n_ctx_train));
  gguf_set_val_u32(g.get(), "llama.embedding_length", static_cast<std::uint32_t>(shape->n_embd));
  gguf_set_val_u32(g.get(), "llama.block_count", static_cast<std::uint32_t>(shape->n_layer));
  gguf_set_val_u32(g.get(), "llama.feed_forward_length", static_cast<std::uint32_t>(shape->n_ff));
  gguf_set_val_u32(g.get(), "llama.attention.head_count", static_cast<std::uint32_t>(shape->n_head));
  gguf_set_val_u32(g.get(), "llama.attention.head_count_kv", static_cast<std::uint32_t>(shape->n_head_kv));
  gguf_set_val_f32(g.get(), "llama.attention.layer_norm_rms_epsilon", 1e-5f);
  gguf_set_val_f32(g.get(), "llama.rope.freq_base", shape->rope_freq_base);
  gguf_set_val_u32(g.get(), "llama.rope.dimension_count", static_cast<std::uint32_t>(shape->n_embd / shape->n_head));
  gguf_set_val_u32(g.get(), "llama.vocab_size", static_cast<std::uint32_t>(n_vocab));

  const auto specs = tensor_specs(*shape, n_vocab, wtype);
  std::unique_ptr<ggml_context, GgmlFree> meta(
      ggml_init({ggml_tensor_overhead() * (specs.size() + 1), nullptr, /*no_alloc=*/true}));
  std::uint64_t total = 0;
  for (const auto& s : specs) {
    ggml_tensor* t = s.ne1 == 1 ? ggml_new_tensor_1d(meta.get(), s.type, s.ne0)
                                : ggml_new_tensor_2d(meta.get(), s.type, s.ne0, s.ne1);
    ggml_set_name(t, s.name.c_str());
    gguf_add_tensor(g.get(), t);
    total += ggml_nbytes(t);
  }

  const std::string tmp = params.out + ".tmp";
  // A failed or interrupted run leaves no partial file under either name.
  struct TmpGuard {
    const std::string& path;
    bool keep = false;
    ~TmpGuard() {
      if (!keep) std::remove(path.c_str());
    }
  } guard{tmp};
  if (!gguf_write_to_file(g.get(), tmp.c_str(), /*only_meta=*/true)) {
    return Error(Errc::io_error, "cannot write " + tmp);
  }
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(tmp.c_str(), "ab"));
  if (!f) return errno_error(errno, "opening " + tmp);

  const size_t align = gguf_get_alignment(g.get());
  std::uint64_t written = 0;
  std::vector<float> row_f32;
  std::vector<std::uint8_t> rows;
  for (const auto& s : specs) {
    Rng rng{hash_name(s.name, params.seed)};
    const size_t row_bytes = ggml_row_size(s.type, s.ne0);
    // Generate and convert a block of rows at a time: bounded memory for any model size.
    const std::int64_t rows_per_block = std::max<std::int64_t>(1, (8 << 20) / (s.ne0 * 4));
    for (std::int64_t r0 = 0; r0 < s.ne1; r0 += rows_per_block) {
      const std::int64_t nr = std::min(rows_per_block, s.ne1 - r0);
      row_f32.resize(static_cast<size_t>(nr * s.ne0));
      for (auto& x : row_f32) x = s.scale == 0.0f ? 1.0f : s.scale * rng.uniform();
      rows.resize(row_bytes * static_cast<size_t>(nr));
      ggml_quantize_chunk(s.type, row_f32.data(), rows.data(), 0, nr, s.ne0, nullptr);
      LLMD_TRY_STATUS(write_all(f.get(), rows.data(), rows.size(), tmp));
      written += rows.size();
      if (progress) progress(written, total);
    }
    const size_t nbytes = row_bytes * static_cast<size_t>(s.ne1);
    const size_t pad = (align - nbytes % align) % align;
    const std::vector<std::uint8_t> zeros(pad, 0);
    LLMD_TRY_STATUS(write_all(f.get(), zeros.data(), pad, tmp));
  }
  if (std::fflush(f.get()) != 0 || ::fsync(::fileno(f.get())) != 0) return errno_error(errno, "flushing " + tmp);
  f.reset();
  if (std::rename(tmp.c_str(), params.out.c_str()) != 0) return errno_error(errno, "renaming " + tmp);
  guard.keep = true;
  return {};
}

}  // namespace llmd::engine
