// KV chunk encoding (see chunk.h).
#include "kvstore/chunk.h"

#include <cstring>
#include <string>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "engine/ggml_types.h"
#include "kvstore/kv_quant.h"

namespace llmd::kvstore {
namespace {

constexpr std::uint32_t kMagic = 0x43564B4Cu;  // "LKVC"
constexpr std::uint16_t kVersion = 2;  // 2: the prefix hash at kPrefixHashOffset
constexpr std::size_t kHeaderBytes = 64;
constexpr std::size_t kChecksumOffset = 48;
constexpr std::size_t kPrefixHashOffset = 56;
constexpr int kZstdLevel = 3;

template <typename T>
void put(std::vector<std::uint8_t>& out, std::size_t at, T v) {
  std::memcpy(out.data() + at, &v, sizeof(T));
}
template <typename T>
T get(std::span<const std::uint8_t> in, std::size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(T));
  return v;
}

Error corrupt(const std::string& what) { return Error(Errc::corrupt, "KV chunk: " + what); }

// The type rows are stored in under a codec (the layout's own type for the exact codecs).
Result<engine::GgmlType> stored_type(Codec codec, engine::GgmlType own) {
  switch (codec) {
    case Codec::exact:
    case Codec::exact_zstd: return own;
    case Codec::q8_0: return engine::ggml_type_from_name("q8_0");
    case Codec::q4_0: return engine::ggml_type_from_name("q4_0");
    case Codec::kivi8:
    case Codec::kivi4:
    case Codec::kivi2: break;  // sections of their own (kv_quant.h), not rows of a ggml type
  }
  return Error(Errc::invalid_argument, "codec " + std::string(codec_name(codec)) + " has no row type");
}

// Code width of the chunk-native codecs; 0 for the others.
int quant_bits(Codec codec) {
  switch (codec) {
    case Codec::kivi8: return 8;
    case Codec::kivi4: return 4;
    case Codec::kivi2: return 2;
    default: return 0;
  }
}

engine::GgmlType f32_type() {
  static const engine::GgmlType t = *engine::ggml_type_from_name("f32");
  return t;
}
engine::GgmlType f16_type() {
  static const engine::GgmlType t = *engine::ggml_type_from_name("f16");
  return t;
}

Result<std::int64_t> row_elements(engine::GgmlType type, std::uint64_t row_bytes) {
  auto n = engine::ggml_row_elements(type, row_bytes);
  if (!n) return Error(Errc::invalid_argument, "a KV row is not a whole number of blocks");
  return *n;
}

// Bytes of one stored row: the layout's row re-expressed in the codec's type.
Result<std::uint64_t> stored_row_bytes(Codec codec, engine::GgmlType own, std::uint64_t own_row_bytes) {
  auto t = stored_type(codec, own);
  if (!t) return t.error();
  if (*t == own) return own_row_bytes;
  auto n = engine::ggml_row_elements(own, own_row_bytes);
  if (!n) return Error(Errc::invalid_argument, "a KV row is not a whole number of blocks");
  auto b = engine::ggml_row_bytes(*t, *n);
  if (!b) {
    return Error(Errc::invalid_argument, "KV rows of " + std::to_string(*n) + " elements cannot be stored as " +
                                             std::string(codec_name(codec)));
  }
  return *b;
}

// Converts n rows between types (a copy when they are the same).
Status convert(engine::GgmlType from, const std::uint8_t* src, std::uint64_t from_row_bytes, engine::GgmlType to,
               std::uint8_t* dst, std::size_t n_rows) {
  if (from == to) {
    std::memcpy(dst, src, from_row_bytes * n_rows);
    return {};
  }
  auto n = engine::ggml_row_elements(from, from_row_bytes);
  if (!n) return Error(Errc::invalid_argument, "a KV row is not a whole number of blocks");
  return engine::convert_rows(from, src, to, dst, static_cast<std::int64_t>(n_rows), *n);
}

// Bytes of one layer's K (or V) rows of n_cells cells in the payload: a section.
Result<std::uint64_t> section_bytes(Codec codec, bool is_k, engine::GgmlType own, std::uint64_t own_row_bytes,
                                    std::uint32_t n_cells) {
  if (const int bits = quant_bits(codec)) {
    auto n = row_elements(own, own_row_bytes);
    if (!n) return n.error();
    return is_k ? kv_quant::k_section_bytes(n_cells, *n, bits) : kv_quant::v_section_bytes(n_cells, *n, bits);
  }
  auto b = stored_row_bytes(codec, own, own_row_bytes);
  if (!b) return b.error();
  return *b * n_cells;
}

// Encodes n_cells rows of the own type into a section; `f32` is scratch.
Status encode_section(Codec codec, bool is_k, engine::GgmlType own, std::uint64_t own_row_bytes,
                      const std::uint8_t* src, std::uint32_t n_cells, std::uint8_t* dst, std::vector<float>& f32) {
  if (const int bits = quant_bits(codec)) {
    auto n = row_elements(own, own_row_bytes);
    if (!n) return n.error();
    f32.resize(static_cast<std::size_t>(*n) * n_cells);
    LLMD_TRY_STATUS(engine::convert_rows(own, src, f32_type(), f32.data(), n_cells, *n));
    return is_k ? kv_quant::encode_k(f32.data(), n_cells, *n, bits, dst)
                : kv_quant::encode_v(f32.data(), n_cells, *n, bits, dst);
  }
  auto to = stored_type(codec, own);
  if (!to) return to.error();
  return convert(own, src, own_row_bytes, *to, dst, n_cells);
}

// Decodes a section back into n_cells rows of the own type; `f32` is scratch.
Status decode_section(Codec codec, bool is_k, engine::GgmlType own, std::uint64_t own_row_bytes,
                      const std::uint8_t* src, std::uint32_t n_cells, std::uint8_t* dst, std::vector<float>& f32) {
  if (const int bits = quant_bits(codec)) {
    auto n = row_elements(own, own_row_bytes);
    if (!n) return n.error();
    if (own == f16_type()) {  // the usual KV type: straight into halves (vectorised)
      if (is_k) {
        kv_quant::decode_k_f16(src, n_cells, *n, bits, dst);
      } else {
        kv_quant::decode_v_f16(src, n_cells, *n, bits, dst);
      }
      return {};
    }
    const bool direct = own == f32_type();
    if (!direct) f32.resize(static_cast<std::size_t>(*n) * n_cells);
    float* out = direct ? reinterpret_cast<float*>(dst) : f32.data();
    if (is_k) {
      kv_quant::decode_k(src, n_cells, *n, bits, out);
    } else {
      kv_quant::decode_v(src, n_cells, *n, bits, out);
    }
    return direct ? Status{} : engine::convert_rows(f32_type(), out, own, dst, n_cells, *n);
  }
  auto from = stored_type(codec, own);
  if (!from) return from.error();
  auto from_bytes = stored_row_bytes(codec, own, own_row_bytes);
  if (!from_bytes) return from_bytes.error();
  return convert(*from, src, *from_bytes, own, dst, n_cells);
}

Result<std::uint64_t> payload_bytes(const engine::KvLayout& layout, Codec codec, std::uint32_t n_cells) {
  std::uint64_t total = static_cast<std::uint64_t>(n_cells) * (sizeof(engine::Pos) + layout.cell_ext_bytes);
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    auto k = section_bytes(codec, true, layout.k_type[l], layout.k_row_bytes[l], n_cells);
    if (!k) return k.error();
    auto v = section_bytes(codec, false, layout.v_type[l], layout.v_row_bytes[l], n_cells);
    if (!v) return v.error();
    total += *k + *v;
  }
  return total;
}

// Covers every byte of the blob except the checksum field itself.
std::uint64_t checksum(std::span<const std::uint8_t> header, std::span<const std::uint8_t> payload) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, header.data(), kChecksumOffset);
  XXH3_64bits_update(&state, header.data() + kChecksumOffset + 8, kHeaderBytes - kChecksumOffset - 8);
  XXH3_64bits_update(&state, payload.data(), payload.size());
  return XXH3_64bits_digest(&state);
}

}  // namespace

Result<std::uint64_t> chunk_payload_bytes(const engine::KvLayout& layout, Codec codec, std::uint32_t n_cells) {
  return payload_bytes(layout, codec, n_cells);
}

std::string_view codec_name(Codec codec) {
  switch (codec) {
    case Codec::exact: return "exact";
    case Codec::exact_zstd: return "exact+zstd";
    case Codec::q8_0: return "q8_0";
    case Codec::q4_0: return "q4_0";
    case Codec::kivi8: return "kivi8";
    case Codec::kivi4: return "kivi4";
    case Codec::kivi2: return "kivi2";
  }
  return "unknown";
}

Result<Codec> codec_from_name(std::string_view name) {
  for (Codec c : kAllCodecs) {
    if (name == codec_name(c)) return c;
  }
  return Error(Errc::invalid_argument,
               "unknown codec '" + std::string(name) + "' (exact, exact+zstd, q8_0, q4_0, kivi8, kivi4, kivi2)");
}

std::uint64_t layout_id(const engine::KvLayout& l) {
  std::vector<std::uint64_t> v = {l.n_layer, l.v_trans ? 1u : 0u, l.cell_ext_bytes};
  for (auto x : l.k_type) v.push_back(static_cast<std::uint64_t>(x));
  for (auto x : l.k_row_bytes) v.push_back(x);
  for (auto x : l.v_type) v.push_back(static_cast<std::uint64_t>(x));
  for (auto x : l.v_row_bytes) v.push_back(x);
  for (auto x : l.v_elem_bytes) v.push_back(x);
  return XXH3_64bits(v.data(), v.size() * sizeof(std::uint64_t));
}

Result<std::vector<std::uint8_t>> encode_chunk(const engine::KvStream& cells, const engine::KvLayout& layout,
                                               Codec codec, std::uint64_t prefix_hash) {
  if (cells.cells.empty()) return Error(Errc::invalid_argument, "a chunk needs at least one cell");
  if (!(engine::layout_of(cells, layout.cell_ext_bytes) == layout)) {
    return Error(Errc::invalid_argument, "the cells do not have the given KV layout");
  }
  const auto n_cells = static_cast<std::uint32_t>(cells.cells.size());
  auto raw_size = payload_bytes(layout, codec, n_cells);
  if (!raw_size) return raw_size.error();

  std::vector<std::uint8_t> raw(*raw_size);
  std::size_t at = 0;
  for (const auto& c : cells.cells) {
    std::memcpy(raw.data() + at, &c.pos, sizeof c.pos);
    at += sizeof c.pos;
    for (std::uint32_t i = 0; i < layout.cell_ext_bytes; ++i) raw[at++] = i < c.ext.size() ? c.ext[i] : 0;
  }
  std::vector<float> f32;
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    for (const bool is_k : {true, false}) {
      const engine::KvRows& rows = is_k ? cells.k[l] : cells.v[l];
      auto bytes = section_bytes(codec, is_k, rows.type, rows.row_bytes, n_cells);
      if (!bytes) return bytes.error();
      LLMD_TRY_STATUS(encode_section(codec, is_k, rows.type, rows.row_bytes, rows.data.data(), n_cells, raw.data() + at, f32));
      at += *bytes;
    }
  }

  std::vector<std::uint8_t> payload;
  if (codec == Codec::exact_zstd) {
    payload.resize(ZSTD_compressBound(raw.size()));
    const std::size_t n = ZSTD_compress(payload.data(), payload.size(), raw.data(), raw.size(), kZstdLevel);
    if (ZSTD_isError(n)) return Error(Errc::internal, std::string("zstd: ") + ZSTD_getErrorName(n));
    payload.resize(n);
  } else {
    payload = std::move(raw);
  }

  std::vector<std::uint8_t> blob(kHeaderBytes + payload.size(), 0);
  put(blob, 0, kMagic);
  put(blob, 4, kVersion);
  put(blob, 6, static_cast<std::uint8_t>(codec));
  put(blob, 8, n_cells);
  put(blob, 12, cells.cells.front().pos);
  put(blob, 16, layout.n_layer);
  put(blob, 20, layout.cell_ext_bytes);
  put(blob, 24, layout_id(layout));
  put(blob, 32, static_cast<std::uint64_t>(payload.size()));
  put(blob, 40, *raw_size);
  put(blob, kPrefixHashOffset, prefix_hash);
  std::memcpy(blob.data() + kHeaderBytes, payload.data(), payload.size());
  put(blob, kChecksumOffset, checksum(blob, payload));
  return blob;
}

Result<ChunkInfo> inspect_chunk(std::span<const std::uint8_t> blob, Verify verify) {
  if (blob.size() < kHeaderBytes) return corrupt("shorter than its header");
  if (get<std::uint32_t>(blob, 0) != kMagic) return corrupt("wrong magic");
  if (get<std::uint16_t>(blob, 4) != kVersion) return corrupt("unknown version " + std::to_string(get<std::uint16_t>(blob, 4)));
  const auto stored = get<std::uint64_t>(blob, 32);
  if (stored != blob.size() - kHeaderBytes) return corrupt("payload size does not match the blob");
  if (verify == Verify::checksum &&
      checksum(blob, blob.subspan(kHeaderBytes)) != get<std::uint64_t>(blob, kChecksumOffset)) {
    return corrupt("checksum mismatch");
  }
  const auto codec = get<std::uint8_t>(blob, 6);
  if (codec >= kNumCodecs) return corrupt("unknown codec " + std::to_string(codec));
  ChunkInfo info;
  info.codec = static_cast<Codec>(codec);
  info.n_cells = get<std::uint32_t>(blob, 8);
  info.first_pos = get<engine::Pos>(blob, 12);
  info.layout = get<std::uint64_t>(blob, 24);
  info.prefix_hash = get<std::uint64_t>(blob, kPrefixHashOffset);
  info.bytes = blob.size();
  if (info.n_cells == 0) return corrupt("no cells");
  return info;
}

namespace {

struct Payload {
  ChunkInfo info;
  std::span<const std::uint8_t> raw;  // positions, then rows: in the blob or in `scratch`
};

// Checks a blob against the layout and returns its (decompressed) payload.
Result<Payload> open_payload(std::span<const std::uint8_t> blob, const engine::KvLayout& layout,
                             std::vector<std::uint8_t>& scratch, Verify verify = Verify::checksum) {
  auto info = inspect_chunk(blob, verify);
  if (!info) return info.error();
  if (info->layout != layout_id(layout) || get<std::uint32_t>(blob, 16) != layout.n_layer ||
      get<std::uint32_t>(blob, 20) != layout.cell_ext_bytes) {
    return Error(Errc::invalid_argument, "KV chunk was made under another model or KV settings");
  }
  auto expected = payload_bytes(layout, info->codec, info->n_cells);
  if (!expected) return expected.error();
  if (get<std::uint64_t>(blob, 40) != *expected) return corrupt("payload size does not match its cells");
  const auto payload = blob.subspan(kHeaderBytes);
  if (info->codec == Codec::exact_zstd) {
    const unsigned long long size = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (size != *expected) return corrupt("compressed payload has the wrong size");
    if (scratch.size() < *expected) scratch.resize(*expected);
    const std::size_t n = ZSTD_decompress(scratch.data(), *expected, payload.data(), payload.size());
    if (ZSTD_isError(n) || n != *expected) return corrupt("payload does not decompress");
    return Payload{*info, std::span<const std::uint8_t>(scratch.data(), *expected)};
  }
  if (payload.size() != *expected) return corrupt("payload size does not match its cells");
  return Payload{*info, payload};
}

// Calls cell(i, pos, ext) for every cell and rows(layer, is_k, section) for every layer's K and V
// section of the payload.
template <typename CellFn, typename RowsFn>
Status walk_payload(const Payload& p, const engine::KvLayout& layout, CellFn&& cell, RowsFn&& rows) {
  std::size_t at = 0;
  for (std::uint32_t i = 0; i < p.info.n_cells; ++i) {
    engine::Pos pos;
    std::memcpy(&pos, p.raw.data() + at, sizeof pos);
    at += sizeof pos;
    cell(i, pos, layout.cell_ext_bytes ? p.raw.data() + at : nullptr);
    at += layout.cell_ext_bytes;
  }
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    for (const bool is_k : {true, false}) {
      const engine::GgmlType own = is_k ? layout.k_type[l] : layout.v_type[l];
      const std::uint64_t own_bytes = is_k ? layout.k_row_bytes[l] : layout.v_row_bytes[l];
      auto bytes = section_bytes(p.info.codec, is_k, own, own_bytes, p.info.n_cells);
      if (!bytes) return bytes.error();
      LLMD_TRY_STATUS(rows(l, is_k, p.raw.data() + at));
      at += *bytes;
    }
  }
  return {};
}

}  // namespace

Result<engine::KvStream> decode_chunk(std::span<const std::uint8_t> blob, const engine::KvLayout& layout) {
  std::vector<std::uint8_t> scratch;
  auto p = open_payload(blob, layout, scratch);
  if (!p) return p.error();
  const std::uint32_t n_cells = p->info.n_cells;
  engine::KvStream out;
  out.v_trans = layout.v_trans;
  out.cells.resize(n_cells);
  out.k.resize(layout.n_layer);
  out.v.resize(layout.n_layer);
  std::vector<float> f32;
  LLMD_TRY_STATUS(walk_payload(
      *p, layout,
      [&](std::uint32_t i, engine::Pos pos, const std::uint8_t* ext) {
        out.cells[i].pos = pos;
        if (ext) out.cells[i].ext.assign(ext, ext + layout.cell_ext_bytes);
        out.cells[i].seq_ids = {0};
      },
      [&](std::uint32_t l, bool is_k, const std::uint8_t* src) -> Status {
        engine::KvRows& rows = is_k ? out.k[l] : out.v[l];
        rows.type = is_k ? layout.k_type[l] : layout.v_type[l];
        rows.row_bytes = is_k ? layout.k_row_bytes[l] : layout.v_row_bytes[l];
        rows.elem_bytes = !is_k && layout.v_trans ? layout.v_elem_bytes[l] : 0;
        rows.data.resize(rows.row_bytes * n_cells);
        return decode_section(p->info.codec, is_k, rows.type, rows.row_bytes, src, n_cells, rows.data.data(), f32);
      }));
  return out;
}

Result<ChunkInfo> decode_chunk_into(std::span<const std::uint8_t> blob, const engine::KvLayout& layout,
                                    engine::SeqStateWriter& out, std::size_t first_cell,
                                    std::vector<std::uint8_t>& scratch, Verify verify) {
  auto p = open_payload(blob, layout, scratch, verify);
  if (!p) return p.error();
  const std::uint32_t n = p->info.n_cells;
  if (first_cell + n > out.n_cells()) return Error(Errc::invalid_argument, "the chunk does not fit the state");
  std::vector<std::uint8_t> vtmp;
  std::vector<float> f32;
  const Codec codec = p->info.codec;
  const Status walked = walk_payload(
      *p, layout, [&](std::uint32_t i, engine::Pos pos, const std::uint8_t* ext) { out.set_cell(first_cell + i, pos, ext); },
      [&](std::uint32_t l, bool is_k, const std::uint8_t* src) -> Status {
        const engine::GgmlType own = is_k ? layout.k_type[l] : layout.v_type[l];
        const std::uint64_t own_bytes = is_k ? layout.k_row_bytes[l] : layout.v_row_bytes[l];
        if (is_k) return decode_section(codec, true, own, own_bytes, src, n, out.k_rows(l, first_cell), f32);
        if (std::uint8_t* dst = out.v_rows(l, first_cell)) return decode_section(codec, false, own, own_bytes, src, n, dst, f32);
        vtmp.resize(layout.v_row_bytes[l] * n);  // v_trans: decode, then scatter
        LLMD_TRY_STATUS(decode_section(codec, false, own, own_bytes, src, n, vtmp.data(), f32));
        out.put_v_rows(l, first_cell, n, vtmp.data());
        return {};
      });
  if (!walked) return walked.error();
  return p->info;
}


}  // namespace llmd::kvstore
