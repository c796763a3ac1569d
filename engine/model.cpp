// Model loading and model facts (see model.h).
#include "engine/model.h"

#include <llama.h>

#include <cerrno>

#include <cstdio>
#include <memory>
#include <vector>

#include <chat.h>
#include <log.h>

#include "engine/backend.h"
#include "engine/ggml_types.h"
#include "engine/gguf_probe.h"

namespace llmd::engine {
namespace {

constexpr const char* kChatml = "chatml";  // common's name of its built-in ChatML template

std::string meta_str(const llama_model* model, const std::string& key) {
  std::vector<char> buf(256);
  int32_t n = llama_model_meta_val_str(model, key.c_str(), buf.data(), buf.size());
  if (n < 0) return {};
  if (static_cast<size_t>(n) >= buf.size()) {
    buf.resize(static_cast<size_t>(n) + 1);
    n = llama_model_meta_val_str(model, key.c_str(), buf.data(), buf.size());
    if (n < 0) return {};
  }
  return std::string(buf.data(), static_cast<size_t>(n));
}

int32_t meta_int(const llama_model* model, const std::string& key, int32_t fallback) {
  const std::string s = meta_str(model, key);
  if (s.empty()) return fallback;
  try {
    return static_cast<int32_t>(std::stol(s));
  } catch (...) {
    return fallback;
  }
}

Result<std::string> fingerprint_of(const std::string& path, uint64_t size) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return errno_error(errno, "reading model file " + path);
  std::vector<unsigned char> buf(1u << 20);
  const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ buf[i]) * 1099511628211ull;
  char out[64];
  std::snprintf(out, sizeof out, "%llu-%016llx", static_cast<unsigned long long>(size), static_cast<unsigned long long>(h));
  return std::string(out);
}

// llama.cpp's chat templates for the model: its own, else ChatML (none, or one the Jinja engine
// cannot parse: the reason goes to info.chat_template_error). common's log lines are off (it
// prints to stderr; what matters reaches callers as errors).
common_chat_templates_ptr load_chat_templates(const llama_model* model, ModelInfo& info) {
  common_log_set_verbosity_thold(-1);
  common_chat_templates_ptr t;
  if (info.has_chat_template) {
    try {
      t = common_chat_templates_init(model, "");
      info.chat_template_fallback = false;
    } catch (const std::exception& e) {
      info.chat_template_error = e.what();
    }
  }
  if (!t) t = common_chat_templates_init(model, kChatml);
  const auto caps = common_chat_templates_get_caps(t.get());
  const auto it = caps.find("supports_tool_calls");
  info.chat_template_tool_calls = it != caps.end() && it->second;
  return t;
}

}  // namespace

Result<std::unique_ptr<Model>> Model::load(const ModelParams& params) {
  ensure_backend();
  auto probe = probe_gguf(params.path);
  if (!probe) return probe.error();

  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = params.n_gpu_layers;
  mp.load_mode = params.use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;

  clear_llama_errors();
  llama_model* model = nullptr;
  try {
    model = llama_model_load_from_file(params.path.c_str(), mp);
  } catch (...) {
    model = nullptr;  // llama.cpp catches its own exceptions; this is belt and braces
  }
  if (model == nullptr) {
    std::string why = take_llama_errors();
    if (why.empty()) why = "llama.cpp could not load it";
    const bool unknown_arch = why.find("unknown model architecture") != std::string::npos;
    return Error(unknown_arch ? Errc::unsupported : Errc::corrupt,
                 "cannot load model " + params.path + " (architecture '" + probe->architecture + "'): " + why);
  }

  auto fingerprint = fingerprint_of(params.path, probe->file_size);
  if (!fingerprint) {
    llama_model_free(model);
    return fingerprint.error();
  }
  ModelInfo info;
  info.path = params.path;
  info.fingerprint = std::move(*fingerprint);
  info.architecture = probe->architecture;
  info.name = probe->name;
  info.file_size = probe->file_size;
  {
    char buf[256];
    llama_model_desc(model, buf, sizeof buf);
    info.description = buf;
  }
  info.file_type = llama_ftype_name(llama_model_ftype(model));
  info.n_params = llama_model_n_params(model);
  info.n_layer = llama_model_n_layer(model);
  info.n_embd = llama_model_n_embd(model);
  info.n_head = llama_model_n_head(model);
  info.n_head_kv = llama_model_n_head_kv(model);
  const int32_t head_dim = info.n_head > 0 ? info.n_embd / info.n_head : 0;
  info.n_embd_head_k = meta_int(model, info.architecture + ".attention.key_length", head_dim);
  info.n_embd_head_v = meta_int(model, info.architecture + ".attention.value_length", head_dim);
  info.n_ctx_train = llama_model_n_ctx_train(model);
  info.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  if (const char* tmpl = llama_model_chat_template(model, nullptr); tmpl != nullptr && *tmpl != '\0') {
    info.has_chat_template = true;
    info.chat_template = tmpl;
  }
  info.kv_bytes_per_token_f16 = static_cast<uint64_t>(info.n_layer) * info.n_head_kv *
                                (static_cast<uint64_t>(info.n_embd_head_k) + info.n_embd_head_v) * 2u;

  const llama_rope_type rope = llama_model_rope_type(model);
  const bool mrope = rope == LLAMA_ROPE_TYPE_MROPE || rope == LLAMA_ROPE_TYPE_IMROPE;
  info.seq_state_cell_ext_bytes = mrope ? 12u : 0u;  // llama_kv_cell_ext: x, y, tok
  info.supports_seq_state = !llama_model_is_recurrent(model) && !llama_model_is_hybrid(model) &&
                            !llama_model_is_diffusion(model) && llama_model_n_swa(model) == 0 &&
                            llama_model_has_decoder(model) && !llama_model_has_encoder(model);

  auto templates = load_chat_templates(model, info);
  std::unique_ptr<Model> out(new Model(model, std::move(info)));
  out->templates_ = templates.release();
  out->first_bytes_ = build_first_byte_index(llama_model_get_vocab(model));
  return out;
}

Model::~Model() {
  common_chat_templates_free(templates_);
  llama_model_free(model_);
}

uint64_t Model::kv_bytes_per_token(const std::string& type_k, const std::string& type_v) const {
  auto k = kv_type_row_bytes(type_k, static_cast<int64_t>(info_.n_head_kv) * info_.n_embd_head_k);
  auto v = kv_type_row_bytes(type_v, static_cast<int64_t>(info_.n_head_kv) * info_.n_embd_head_v);
  if (!k || !v) return 0;
  return static_cast<uint64_t>(info_.n_layer) * (*k + *v);
}

}  // namespace llmd::engine
