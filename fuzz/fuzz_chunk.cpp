// Fuzz target: the KV chunk blob decoder (kvstore/chunk.h) against stories260K's real KV layouts.
//
// Input: [layout selector][first-cell selector][blob]. The blob is inspected (with and without
// its checksum), decoded (decode_chunk, checksum verified, as a blob from disk), and decoded in
// place into a sequence state being built (decode_chunk_into with Verify::header_only, as a T1
// blob is restored: this is the path that sees mutated payloads, since the fuzzer cannot forge
// XXH3 checksums). Properties: errors are corrupt or invalid_argument, never a crash; a blob that
// passes its checksum passes the header-only check too; decoded cells have the layout; the state
// built in place parses and holds exactly what decode_chunk returned for the same blob.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/seq_state.h"
#include "fuzz/fuzz_util.h"
#include "fuzz/kv_layouts.h"
#include "kvstore/chunk.h"

namespace {

using namespace llmd;

void check_error(const Error& e, const char* what) {
  FUZZ_CHECK(e.code() == Errc::corrupt || e.code() == Errc::invalid_argument,
             std::string(what) + " failed with an unexpected code: " + e.to_string());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<engine::KvLayout> layouts = fuzz::kv_layouts();
  static std::vector<std::uint8_t> state_buffer;  // reused, as the engine's restore buffer is
  static std::vector<std::uint8_t> scratch;

  fuzz::ByteReader in(data, size);
  const engine::KvLayout& layout = layouts[in.byte() % layouts.size()];
  const std::size_t first_cell = in.byte() % 4;
  const std::span<const std::uint8_t> blob = in.rest();

  const auto info = kvstore::inspect_chunk(blob, kvstore::Verify::checksum);
  const auto header = kvstore::inspect_chunk(blob, kvstore::Verify::header_only);
  if (!info) check_error(info.error(), "inspect_chunk");
  if (!header) check_error(header.error(), "inspect_chunk (header only)");
  FUZZ_CHECK(!info || header, "a blob passed its checksum but not the header-only check");

  const auto decoded = kvstore::decode_chunk(blob, layout);
  if (!decoded) {
    check_error(decoded.error(), "decode_chunk");
  } else {
    FUZZ_CHECK(info, "decode_chunk accepted a blob inspect_chunk refuses");
    FUZZ_CHECK(decoded->cells.size() == info->n_cells, "decoded cell count differs from the header");
    FUZZ_CHECK(engine::layout_of(*decoded, layout.cell_ext_bytes) == layout, "decoded rows are not in the layout");
    FUZZ_CHECK(decoded->cells.front().pos == info->first_pos, "first position differs from the header");
  }

  // In place, into cells [first_cell, first_cell + n) of a state of first_cell + n cells.
  if (!header || header->n_cells > 4096) return 0;
  const std::size_t n = header->n_cells;
  engine::SeqStateWriter writer(state_buffer, layout, /*seq=*/0, /*n_stream=*/1, /*stream=*/0, first_cell + n);
  for (std::size_t i = 0; i < first_cell; ++i) writer.set_cell(i, static_cast<engine::Pos>(i), nullptr);
  const auto into = kvstore::decode_chunk_into(blob, layout, writer, first_cell, scratch, kvstore::Verify::header_only);
  if (!into) {
    check_error(into.error(), "decode_chunk_into");
    FUZZ_CHECK(!decoded, "decode_chunk_into refused a blob decode_chunk accepts: " + into.error().to_string());
    return 0;
  }
  FUZZ_CHECK(into->n_cells == n, "decode_chunk_into reports another cell count");
  const auto parsed = engine::parse_seq_state(writer.bytes(), {layout.cell_ext_bytes});
  FUZZ_CHECK(parsed, "a state built from a chunk does not parse: " + parsed.error().to_string());
  FUZZ_CHECK(parsed->streams.size() == 1 && parsed->streams[0].cells.size() == first_cell + n,
             "a state built from a chunk has the wrong shape");
  const engine::KvStream& s = parsed->streams[0];
  FUZZ_CHECK(engine::layout_of(s, layout.cell_ext_bytes) == layout, "a state built from a chunk has another layout");
  if (!decoded) return 0;
  // Both decoders agree, cell for cell and row for row.
  for (std::size_t i = 0; i < n; ++i) {
    FUZZ_CHECK(s.cells[first_cell + i].pos == decoded->cells[i].pos, "positions differ between the decoders");
  }
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    const std::uint64_t kb = layout.k_row_bytes[l], vb = layout.v_row_bytes[l];
    FUZZ_CHECK(std::memcmp(s.k[l].data.data() + first_cell * kb, decoded->k[l].data.data(), n * kb) == 0,
               "K rows differ between the decoders in layer " + std::to_string(l));
    FUZZ_CHECK(std::memcmp(s.v[l].data.data() + first_cell * vb, decoded->v[l].data.data(), n * vb) == 0,
               "V rows differ between the decoders in layer " + std::to_string(l));
  }
  return 0;
}
