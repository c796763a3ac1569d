// The byte format of one sequence's KV state, as llama_state_seq_get_data_ext writes it and
// llama_state_seq_set_data_ext reads it (llama.cpp v0.5.0, src/llama-context.cpp and
// src/llama-kv-cache.cpp state_write / state_write_meta / state_write_data):
//
//   u32 magic (0xaf143cd8)   i32 seq_id   u32 n_stream
//   per stream:  u32 cell_count; if cell_count > 0:
//     per cell:  i32 pos, u32 n_seq_id, [cell_ext_bytes of extension], i32 seq_id x n_seq_id
//     u32 v_trans, u32 n_layer
//     per layer: i32 k_type, u64 k_row_bytes, k_row_bytes x cell_count          (K rows, cell-major)
//     v_trans == 0, per layer: i32 v_type, u64 v_row_bytes, v_row_bytes x cell_count
//     v_trans == 1, per layer: i32 v_type, u32 v_elem_bytes, u32 n_embd_v, then for each of the
//                   n_embd_v dimensions, v_elem_bytes x cell_count (V transposed, dimension-major)
//
// parse_seq_state turns those bytes into cells and per-layer rows; V is always held cell-major (a
// transposed V is transposed on parse and back on serialize), so every cell owns one K row and one
// V row per layer and a state can be cut into cell ranges and joined again. This is the primitive
// the kvstore cuts chunks from. serialize_seq_state(parse_seq_state(b)) == b, bit for bit.
//
// Pure code: no llama.h, no I/O. The parser is bounds-checked and safe on hostile input.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"
#include "engine/types.h"

namespace llmd::engine {

inline constexpr std::uint32_t kSeqStateMagic = 0xaf143cd8u;

struct SeqStateFormat {
  std::uint32_t cell_ext_bytes = 0;  // ModelInfo::seq_state_cell_ext_bytes
};

struct KvCell {
  Pos pos = 0;
  std::vector<SeqId> seq_ids;
  std::vector<std::uint8_t> ext;  // cell_ext_bytes of extension data (M-RoPE models), else empty
};

// One layer's K or V rows for the cells of a stream, cell-major: cell i's row is
// data[i*row_bytes, (i+1)*row_bytes).
struct KvRows {
  std::int32_t type = 0;         // ggml type
  std::uint64_t row_bytes = 0;   // bytes per cell
  std::uint32_t elem_bytes = 0;  // V only, when the stream is v_trans: bytes per element
  std::vector<std::uint8_t> data;
};

struct KvStream {
  std::vector<KvCell> cells;  // empty: the stream holds nothing of this sequence (then no layers)
  bool v_trans = false;
  std::vector<KvRows> k;      // one per layer
  std::vector<KvRows> v;      // one per layer
};

struct SeqState {
  std::uint32_t magic = kSeqStateMagic;
  SeqId seq_id = 0;
  std::uint32_t cell_ext_bytes = 0;
  std::vector<KvStream> streams;

  std::size_t n_cells() const;
  // The one stream that holds cells, or -1 if none does (an empty sequence).
  int active_stream() const;
};

// The shape of the rows of a stream: what the kvstore needs to know about the KV without knowing
// llama.cpp. Two streams can be joined iff their layouts are equal.
struct KvLayout {
  std::uint32_t n_layer = 0;
  bool v_trans = false;
  std::uint32_t cell_ext_bytes = 0;
  std::vector<std::int32_t> k_type, v_type;
  std::vector<std::uint64_t> k_row_bytes, v_row_bytes;
  std::vector<std::uint32_t> v_elem_bytes;  // v_trans only

  std::uint64_t bytes_per_cell() const;  // K + V rows of all layers
  bool operator==(const KvLayout&) const = default;
};

// Builds one sequence's state bytes straight into a caller's buffer, for n_cells cells of one
// stream, filled by cell ranges (the kvstore's chunks) in place: restoring neither allocates (the
// buffer is reused, only grown) nor copies rows twice. Every cell must be written before bytes()
// is used; the cells get the sequence id `seq`.
class SeqStateWriter {
 public:
  SeqStateWriter(std::vector<std::uint8_t>& buffer, const KvLayout& layout, SeqId seq, std::uint32_t n_stream,
                 std::uint32_t stream, std::size_t n_cells);
  void set_cell(std::size_t i, Pos pos, const std::uint8_t* ext);  // ext: layout.cell_ext_bytes bytes, or null
  // Where cell `cell`'s K row of a layer goes; the rows of consecutive cells are contiguous.
  std::uint8_t* k_rows(std::uint32_t layer, std::size_t cell);
  // The same for V when the layout is not v_trans; nullptr when it is (use put_v_rows).
  std::uint8_t* v_rows(std::uint32_t layer, std::size_t cell);
  // Writes n cell-major V rows from `cell` on (scattered to dimension-major when v_trans).
  void put_v_rows(std::uint32_t layer, std::size_t cell, std::size_t n, const std::uint8_t* rows);
  std::size_t n_cells() const { return n_cells_; }
  std::span<const std::uint8_t> bytes() const { return {buf_.data(), size_}; }

 private:
  std::vector<std::uint8_t>& buf_;
  const KvLayout& layout_;
  std::size_t n_cells_ = 0, size_ = 0, cells_at_ = 0, cell_bytes_ = 0;
  SeqId seq_ = 0;
  std::vector<std::size_t> k_at_, v_at_;  // per layer: offset of the first row / element
};

// Errors: corrupt (wrong magic, truncated, inconsistent sizes, trailing bytes).
Result<SeqState> parse_seq_state(std::span<const std::uint8_t> bytes, const SeqStateFormat& format = {});
std::vector<std::uint8_t> serialize_seq_state(const SeqState& state);

KvLayout layout_of(const KvStream& stream, std::uint32_t cell_ext_bytes);

// Cells [begin, end) of a stream with their rows (invalid_argument if the range is out of bounds).
Result<KvStream> slice_cells(const KvStream& stream, std::size_t begin, std::size_t end);
// Appends src's cells and rows to dst (invalid_argument if the layouts differ). An empty dst takes
// src's layout.
Status append_cells(KvStream& dst, const KvStream& src);
// Puts a stream's cells in position order, moving their K and V rows with them. llama.cpp writes a
// sequence's cells in the pool's cell order, which is not position order once the pool is
// fragmented (tokens decoded later can land in cells freed earlier). No-op when already in order.
void sort_cells_by_position(KvStream& stream);

}  // namespace llmd::engine
