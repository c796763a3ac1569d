// KV chunks: N consecutive cells of one session's KV (the K and V rows of every layer, plus their
// positions), encoded with a codec into a self-describing, checksummed blob — the unit the kvstore
// keeps in host RAM (T1) and on disk (T2) and restores into a slot.
//
// Codecs:
//   exact       the context's own KV type, bit for bit
//   exact_zstd  the same, zstd-compressed (for disk)
//   q8_0, q4_0  rows re-quantized through ggml (engine::convert_rows); lossy, 53% / 28% of f16
//   kivi8, kivi4, kivi2
//               chunk-native quantization (kv_quant.h): K per channel over the chunk's cells, V
//               per token in groups of 32 channels (64 at 8 bits), asymmetric, 8 / 4 / 2-bit codes; lossy, about
//               (bits + 1) / 16 of f16 at 64-cell chunks (the K ranges cost more in shorter ones)
// A decoded chunk always comes back in the context's KV types (engine::KvLayout), ready to join
// other chunks and go into llama.cpp.
//
// Blob layout (little endian): a 64-byte header (magic "LKVC", version, codec, cell count, first
// position, layer count, cell extension size, layout id, payload sizes, an XXH3-64 checksum of every
// other byte of the blob, and the prefix hash: what the KV was computed from), then the payload: per
// cell its position (and extension bytes), then per layer the K rows and the V rows of all cells, in
// the codec's type; the payload is zstd-compressed for exact_zstd.
//
// The prefix hash binds a blob to the tokens it was made for: the KV of a cell depends on every
// token before it, so the chunk store writes the chained hash of all of a session's tokens up to the
// chunk's end (seeded with the model and layout: ChunkStore) and, on restore, compares the blob's
// own hash with the history being restored. An intact blob of other tokens (another session's
// file, an earlier history's) is thereby refused, not only a damaged one. Version 1 blobs (no
// prefix hash) are refused as an unknown version.
//
// Pure code over the engine's layout types; no llama.h, no I/O. Thread-safe (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/seq_state.h"

namespace llmd::kvstore {

enum class Codec : std::uint8_t { exact = 0, exact_zstd = 1, q8_0 = 2, q4_0 = 3, kivi8 = 4, kivi4 = 5, kivi2 = 6 };
inline constexpr std::size_t kNumCodecs = 7;  // arrays indexed by Codec
inline constexpr Codec kAllCodecs[kNumCodecs] = {Codec::exact, Codec::exact_zstd, Codec::q8_0, Codec::q4_0,
                                                 Codec::kivi8, Codec::kivi4, Codec::kivi2};

std::string_view codec_name(Codec codec);
Result<Codec> codec_from_name(std::string_view name);  // invalid_argument for unknown names

// An identity of a KV layout: chunks made under one layout decode only under the same one (a
// model or KV-type change makes old chunks unusable, never wrongly used).
std::uint64_t layout_id(const engine::KvLayout& layout);

struct ChunkInfo {
  Codec codec = Codec::exact;
  std::uint32_t n_cells = 0;
  engine::Pos first_pos = 0;
  std::uint64_t layout = 0;
  std::uint64_t prefix_hash = 0;  // what encode_chunk was given
  std::uint64_t bytes = 0;        // whole blob
};

// Encodes a stream's cells (all of them; cut them with engine::slice_cells first), recording
// `prefix_hash` (the identity of the tokens the KV was computed from; 0 for a chunk bound to none,
// as in tests and benchmarks) in the header, under the checksum. Errors: invalid_argument if the
// cells do not match the layout, or a row cannot be quantized to the codec's type (q8_0, q4_0: its
// length is not a multiple of 32 elements; kivi: non-finite values or a range beyond half
// precision — the caller keeps such a chunk exact).
Result<std::vector<std::uint8_t>> encode_chunk(const engine::KvStream& cells, const engine::KvLayout& layout,
                                               Codec codec, std::uint64_t prefix_hash = 0);

// Payload bytes of a chunk of n_cells cells under a codec (without the 64-byte header; for
// exact_zstd, before compression). Errors: invalid_argument if the layout's rows cannot be held in
// the codec (q8_0 and q4_0 need multiples of 32 elements).
Result<std::uint64_t> chunk_payload_bytes(const engine::KvLayout& layout, Codec codec, std::uint32_t n_cells);

// Whether a blob's checksum is checked: always for what comes from disk; a blob the process made
// and kept in its own memory (T1) may skip it (a restore then reads its bytes once, not twice).
enum class Verify { checksum, header_only };

// Reads a blob's header after checking its checksum (corrupt) and size.
Result<ChunkInfo> inspect_chunk(std::span<const std::uint8_t> blob, Verify verify = Verify::checksum);

// Decodes a blob made under `layout` back to cells and rows in the layout's types. Errors: corrupt
// (checksum, sizes, decompression), invalid_argument (made under another layout). The cells' seq_ids
// are {0}; whoever assembles a state sets the destination sequence.
Result<engine::KvStream> decode_chunk(std::span<const std::uint8_t> blob, const engine::KvLayout& layout);

// Decodes a blob made under `layout` straight into cells [first_cell, first_cell + n) of a state
// being built (no intermediate copy); `scratch` is reused for decompression. Returns the chunk's
// header. Errors as decode_chunk, and invalid_argument if the cells do not fit `out`.
Result<ChunkInfo> decode_chunk_into(std::span<const std::uint8_t> blob, const engine::KvLayout& layout,
                                    engine::SeqStateWriter& out, std::size_t first_cell,
                                    std::vector<std::uint8_t>& scratch, Verify verify = Verify::checksum);


}  // namespace llmd::kvstore
