// llmd-fuzz-corpus: writes the seed corpora of the binary formats from the real engine, so they
// can be regenerated whenever a format changes (a new chunk header version, a new llama.cpp):
//
//   llmd-fuzz-corpus MODEL.gguf fuzz/corpus      (scripts/fuzz.sh corpus does this)
//   llmd-fuzz-corpus --check fuzz/corpus         (ctest fuzz.seeds_are_current)
//
// It loads the model (stories260K), decodes a prompt in each KV configuration the fuzz targets
// know (kv_layouts.h: f16 with and without flash attention; q8_0 converted from f16), checks that
// the context's real KV layout is the one the targets use, and writes
//   fuzz_seq_state/: real sequence states (llama_state_seq_get_data_ext bytes) of 3 and 12 tokens,
//                    and hand-built ones the model cannot make (cell extensions, several streams,
//                    cells of several sequences, an empty sequence);
//   fuzz_chunk/:     chunk blobs of those states' cells in every codec.
// Each file starts with the target's selector bytes (see fuzz_chunk.cpp, fuzz_seq_state.cpp).
// Existing seed files of these names are replaced; other files in the directories (regression
// inputs, what campaigns merged in) are left alone. --check reads the generated seeds back and
// fails if one is missing or no longer parses or decodes: a format change has made them stale.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/batch.h"
#include "engine/context.h"
#include "engine/ggml_types.h"
#include "engine/model.h"
#include "engine/seq_state.h"
#include "engine/tokenizer.h"
#include "fuzz/kv_layouts.h"
#include "kvstore/chunk.h"

namespace {

namespace fs = std::filesystem;
using namespace llmd;

bool write_file(const fs::path& path, const std::vector<std::uint8_t>& prefix, std::span<const std::uint8_t> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(prefix.data()), static_cast<std::streamsize>(prefix.size()));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(f);
}

int die(const std::string& what) {
  std::fprintf(stderr, "llmd-fuzz-corpus: %s\n", what.c_str());
  return 1;
}

std::string describe(const engine::KvLayout& l) {
  std::string s = "n_layer " + std::to_string(l.n_layer) + ", v_trans " + std::to_string(l.v_trans) +
                  ", cell_ext " + std::to_string(l.cell_ext_bytes);
  for (std::uint32_t i = 0; i < l.n_layer; ++i) {
    s += "; layer " + std::to_string(i) + ": k " + std::to_string(l.k_type[i]) + "/" + std::to_string(l.k_row_bytes[i]) +
         " v " + std::to_string(l.v_type[i]) + "/" + std::to_string(l.v_row_bytes[i]);
    if (l.v_trans) s += "/" + std::to_string(l.v_elem_bytes[i]);
  }
  return s;
}

// A state the model does not make: two streams (the second holding the cells), cells with
// extension bytes and several sequence ids, in the given layout.
engine::SeqState synthetic_state(const engine::KvLayout& layout, std::uint32_t ext_bytes, std::uint32_t n_cells) {
  engine::SeqState st;
  st.seq_id = 1;
  st.cell_ext_bytes = ext_bytes;
  st.streams.resize(2);
  engine::KvStream& s = st.streams[1];
  s.v_trans = layout.v_trans;
  for (std::uint32_t i = 0; i < n_cells; ++i) {
    engine::KvCell c;
    c.pos = static_cast<engine::Pos>(n_cells - i);  // out of position order
    c.seq_ids = i % 2 ? std::vector<engine::SeqId>{1} : std::vector<engine::SeqId>{0, 1};
    c.ext.assign(ext_bytes, static_cast<std::uint8_t>(i));
    s.cells.push_back(c);
  }
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    engine::KvRows k;
    k.type = layout.k_type[l];
    k.row_bytes = layout.k_row_bytes[l];
    k.data.assign(k.row_bytes * n_cells, static_cast<std::uint8_t>(0x11 * (l + 1)));
    engine::KvRows v;
    v.type = layout.v_type[l];
    v.row_bytes = layout.v_row_bytes[l];
    v.elem_bytes = layout.v_trans ? layout.v_elem_bytes[l] : 0;
    v.data.assign(v.row_bytes * n_cells, static_cast<std::uint8_t>(0x22 * (l + 1)));
    s.k.push_back(std::move(k));
    s.v.push_back(std::move(v));
  }
  return st;
}

std::string codec_file_name(kvstore::Codec codec) {
  std::string name(kvstore::codec_name(codec));
  return name == "exact+zstd" ? "exact_zstd" : name;
}

constexpr kvstore::Codec kCodecs[] = {kvstore::Codec::exact, kvstore::Codec::exact_zstd, kvstore::Codec::q8_0,
                                      kvstore::Codec::q4_0,  kvstore::Codec::kivi8,      kvstore::Codec::kivi4,
                                      kvstore::Codec::kivi2};

std::optional<std::vector<std::uint8_t>> read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The generated seeds are all there and still valid for today's formats.
int check(const fs::path& dir) {
  const auto layouts = fuzz::kv_layouts();
  const auto configs = fuzz::kv_layout_configs();
  std::vector<std::string> states = {"empty.bin"};
  int bad = 0;
  for (std::size_t li = 0; li < layouts.size(); ++li) {
    const std::string cfg = configs[li].name;
    for (const char* n : {"-3-tokens.bin", "-12-tokens.bin", "-synthetic-ext0.bin", "-synthetic-ext4.bin"}) {
      states.push_back(cfg + n);
    }
    for (auto codec : kCodecs) {
      const fs::path p = dir / "fuzz_chunk" / (cfg + "-" + codec_file_name(codec) + ".bin");
      const auto bytes = read_file(p);
      if (!bytes || bytes->size() < 2) {
        std::fprintf(stderr, "missing: %s\n", p.c_str());
        ++bad;
        continue;
      }
      const auto& layout = layouts[(*bytes)[0] % layouts.size()];
      auto decoded = kvstore::decode_chunk(std::span<const std::uint8_t>(*bytes).subspan(2), layout);
      if (!decoded) {
        std::fprintf(stderr, "stale: %s: %s\n", p.c_str(), decoded.error().to_string().c_str());
        ++bad;
      }
    }
  }
  for (const auto& name : states) {
    const fs::path p = dir / "fuzz_seq_state" / name;
    const auto bytes = read_file(p);
    if (!bytes || bytes->empty()) {
      std::fprintf(stderr, "missing: %s\n", p.c_str());
      ++bad;
      continue;
    }
    auto parsed = engine::parse_seq_state(std::span<const std::uint8_t>(*bytes).subspan(1), {(*bytes)[0]});
    if (!parsed) {
      std::fprintf(stderr, "stale: %s: %s\n", p.c_str(), parsed.error().to_string().c_str());
      ++bad;
    }
  }
  if (bad) {
    std::fprintf(stderr, "llmd-fuzz-corpus: %d seeds missing or stale; regenerate them: scripts/fuzz.sh corpus\n", bad);
    return 1;
  }
  std::printf("llmd-fuzz-corpus: the seeds under %s are current\n", dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--check") return check(argv[2]);
  if (argc != 3) {
    std::fprintf(stderr, "usage: llmd-fuzz-corpus MODEL.gguf CORPUS_DIR | --check CORPUS_DIR\n");
    return 2;
  }
  auto model = engine::Model::load({argv[1]});
  if (!model) return die("loading " + std::string(argv[1]) + ": " + model.error().to_string());
  engine::Tokenizer tok(**model);
  const fs::path out = argv[2];
  const fs::path states_dir = out / "fuzz_seq_state";
  const fs::path chunks_dir = out / "fuzz_chunk";
  fs::create_directories(states_dir);
  fs::create_directories(chunks_dir);

  const auto layouts = fuzz::kv_layouts();
  const auto configs = fuzz::kv_layout_configs();
  auto tokens = tok.tokenize("Once upon a time, there was a little dog named Max who liked the park.", true, false);
  if (!tokens) return die(tokens.error().to_string());
  int written = 0;
  // The f16 states of the last model layout, for the layouts converted from them.
  std::vector<std::vector<std::uint8_t>> f16_states;
  for (std::size_t li = 0; li < layouts.size(); ++li) {
    const auto& cfg = configs[li];
    std::vector<std::vector<std::uint8_t>> states;  // of 3 and 12 tokens
    if (cfg.from_model) {
      engine::ContextParams p;
      p.n_ctx = 64;
      p.n_slots = 1;
      p.n_threads = 1;
      p.flash_attn = cfg.flash_attn ? engine::FlashAttn::on : engine::FlashAttn::off;
      auto ctx = engine::Context::create(**model, p);
      if (!ctx) return die(std::string("context for layout ") + cfg.name + ": " + ctx.error().to_string());
      const auto& real = (*ctx)->kv_layout();
      if (!(real == layouts[li])) {
        return die(std::string("layout ") + cfg.name + " differs from the model's; update fuzz/kv_layouts.h to\n  " +
                   describe(real) + "\n(was " + describe(layouts[li]) + ")");
      }
      for (const std::size_t n : {std::size_t{3}, std::size_t{12}}) {
        (*ctx)->seq_clear(0);
        engine::Batch batch(static_cast<std::int32_t>(n));
        for (std::size_t i = 0; i < n; ++i) batch.add((*tokens)[i], static_cast<engine::Pos>(i), 0, i + 1 == n);
        if (auto st = (*ctx)->decode(batch); !st) return die(st.error().to_string());
        auto bytes = (*ctx)->seq_state_get(0);
        if (!bytes) return die(bytes.error().to_string());
        states.push_back(std::move(*bytes));
      }
      if (!layouts[li].v_trans) f16_states = states;
    } else {
      // Every row of the f16 states converted to the layout's type.
      for (const auto& f16 : f16_states) {
        auto st = engine::parse_seq_state(f16);
        if (!st) return die(st.error().to_string());
        for (auto& s : st->streams) {
          for (std::uint32_t l = 0; l < s.k.size(); ++l) {
            for (auto* rows : {&s.k[l], &s.v[l]}) {
              const bool is_k = rows == &s.k[l];
              const auto to = is_k ? layouts[li].k_type[l] : layouts[li].v_type[l];
              const auto to_bytes = is_k ? layouts[li].k_row_bytes[l] : layouts[li].v_row_bytes[l];
              const auto n_rows = static_cast<std::int64_t>(s.cells.size());
              const auto per_row = engine::ggml_row_elements(rows->type, rows->row_bytes);
              if (!per_row) return die("an f16 row is not whole elements");
              std::vector<std::uint8_t> converted(to_bytes * s.cells.size());
              if (auto c = engine::convert_rows(rows->type, rows->data.data(), to, converted.data(), n_rows, *per_row); !c) {
                return die(c.error().to_string());
              }
              rows->type = to;
              rows->row_bytes = to_bytes;
              rows->data = std::move(converted);
            }
          }
          if (!s.cells.empty() && !(engine::layout_of(s, 0) == layouts[li])) {
            return die(std::string("converted states do not have layout ") + cfg.name);
          }
        }
        states.push_back(engine::serialize_seq_state(*st));
      }
    }
    for (std::size_t si = 0; si < states.size(); ++si) {
      const auto& bytes = states[si];
      const std::size_t n = si == 0 ? 3 : 12;
      const std::string name = std::string(cfg.name) + "-" + std::to_string(n) + "-tokens";
      if (!write_file(states_dir / (name + ".bin"), {0}, bytes)) return die("writing " + name);
      ++written;
      if (n != 12) continue;
      auto parsed = engine::parse_seq_state(bytes);
      if (!parsed) return die(parsed.error().to_string());
      auto cells = engine::slice_cells(parsed->streams[0], 4, 8);
      if (!cells) return die(cells.error().to_string());
      for (auto codec : kCodecs) {
        auto blob = kvstore::encode_chunk(*cells, layouts[li], codec);
        if (!blob) return die(blob.error().to_string());
        const std::string codec_file = codec_file_name(codec);
        // Selectors: the layout, and the cell the chunk lands on in the state being built.
        const std::vector<std::uint8_t> prefix = {static_cast<std::uint8_t>(li), static_cast<std::uint8_t>(li)};
        if (!write_file(chunks_dir / (std::string(cfg.name) + "-" + codec_file + ".bin"), prefix, *blob)) {
          return die("writing a chunk");
        }
        ++written;
      }
    }
    // Hand-built states in this layout: with a 4-byte cell extension (M-RoPE-like) and without.
    for (const std::uint32_t ext : {0u, 4u}) {
      const auto bytes = engine::serialize_seq_state(synthetic_state(layouts[li], ext, 3));
      const std::string name = std::string(cfg.name) + "-synthetic-ext" + std::to_string(ext);
      if (!write_file(states_dir / (name + ".bin"), {static_cast<std::uint8_t>(ext)}, bytes)) return die("writing");
      ++written;
    }
  }
  // An empty sequence: one stream without cells.
  engine::SeqState empty;
  empty.streams.resize(1);
  if (!write_file(states_dir / "empty.bin", {0}, engine::serialize_seq_state(empty))) return die("writing");
  ++written;
  std::printf("llmd-fuzz-corpus: %d files under %s\n", written, out.c_str());
  return 0;
}
