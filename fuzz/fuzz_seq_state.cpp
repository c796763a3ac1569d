// Fuzz target: the sequence-state parser (engine/seq_state.h), llama.cpp's per-sequence KV
// bytes, which llmd parses for every write-back and validates before any state reaches llama.cpp.
//
// Input: [cell extension size][state bytes]. Properties, whenever parse_seq_state succeeds:
//   - serialize_seq_state(parse(b)) == b, bit for bit;
//   - cutting the stream at any cell and joining the halves (slice_cells, append_cells) gives it back;
//   - sort_cells_by_position orders the cells and moves every cell's rows with it;
//   - SeqStateWriter, given the parsed layout, cells and rows, writes the same bytes (when the state
//     is one the writer can express: one stream with cells, each cell of exactly this sequence).
// Failures are corrupt (or invalid_argument for the extension size), never a crash.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "engine/seq_state.h"
#include "fuzz/fuzz_util.h"

namespace {

using namespace llmd;

bool same_cell(const engine::KvCell& a, const engine::KvCell& b) {
  return a.pos == b.pos && a.seq_ids == b.seq_ids && a.ext == b.ext;
}

bool same_stream(const engine::KvStream& a, const engine::KvStream& b) {
  if (a.cells.size() != b.cells.size() || a.v_trans != b.v_trans || a.k.size() != b.k.size() ||
      a.v.size() != b.v.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.cells.size(); ++i) {
    if (!same_cell(a.cells[i], b.cells[i])) return false;
  }
  for (std::size_t l = 0; l < a.k.size(); ++l) {
    if (a.k[l].data != b.k[l].data || a.v[l].data != b.v[l].data) return false;
  }
  return true;
}

void check_slicing(const engine::KvStream& s, std::size_t cut) {
  auto head = engine::slice_cells(s, 0, cut);
  auto tail = engine::slice_cells(s, cut, s.cells.size());
  FUZZ_CHECK(head && tail, "slicing a parsed stream in range failed");
  engine::KvStream joined = *head;
  FUZZ_CHECK(engine::append_cells(joined, *tail).ok(), "joining the two halves of a stream failed");
  FUZZ_CHECK(same_stream(joined, s), "slice + append did not give the stream back (cut at " + std::to_string(cut) + ")");
  FUZZ_CHECK(!engine::slice_cells(s, cut, s.cells.size() + 1), "a slice past the end was accepted");
}

void check_sorting(const engine::KvStream& s) {
  std::vector<std::size_t> order(s.cells.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return s.cells[a].pos < s.cells[b].pos; });
  engine::KvStream sorted = s;
  engine::sort_cells_by_position(sorted);
  for (std::size_t i = 0; i < order.size(); ++i) {
    FUZZ_CHECK(same_cell(sorted.cells[i], s.cells[order[i]]), "sorting lost or reordered a cell");
    for (std::size_t l = 0; l < s.k.size(); ++l) {
      const auto kb = s.k[l].row_bytes, vb = s.v[l].row_bytes;
      FUZZ_CHECK(std::memcmp(sorted.k[l].data.data() + i * kb, s.k[l].data.data() + order[i] * kb, kb) == 0 &&
                     std::memcmp(sorted.v[l].data.data() + i * vb, s.v[l].data.data() + order[i] * vb, vb) == 0,
                 "sorting did not move a cell's rows with it");
    }
  }
}

void check_writer(const engine::SeqState& st, std::span<const std::uint8_t> bytes) {
  const int active = st.active_stream();
  if (active < 0) return;
  for (std::size_t i = 0; i < st.streams.size(); ++i) {
    if (static_cast<int>(i) != active && !st.streams[i].cells.empty()) return;  // several streams hold cells
  }
  const engine::KvStream& s = st.streams[static_cast<std::size_t>(active)];
  for (const auto& c : s.cells) {
    if (c.seq_ids.size() != 1 || c.seq_ids[0] != st.seq_id) return;
  }
  const engine::KvLayout layout = engine::layout_of(s, st.cell_ext_bytes);
  static std::vector<std::uint8_t> buffer;  // reused across inputs, as the engine reuses it
  engine::SeqStateWriter w(buffer, layout, st.seq_id, static_cast<std::uint32_t>(st.streams.size()),
                           static_cast<std::uint32_t>(active), s.cells.size());
  for (std::size_t i = 0; i < s.cells.size(); ++i) {
    w.set_cell(i, s.cells[i].pos, s.cells[i].ext.empty() ? nullptr : s.cells[i].ext.data());
  }
  for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
    std::memcpy(w.k_rows(l, 0), s.k[l].data.data(), s.k[l].data.size());
    w.put_v_rows(l, 0, s.cells.size(), s.v[l].data.data());
  }
  const auto built = w.bytes();
  FUZZ_CHECK(built.size() == bytes.size() && std::memcmp(built.data(), bytes.data(), bytes.size()) == 0,
             "SeqStateWriter wrote other bytes than the state it was given (" + std::to_string(built.size()) + " vs " +
                 std::to_string(bytes.size()) + " bytes)");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::ByteReader in(data, size);
  const engine::SeqStateFormat format{in.byte()};
  const std::span<const std::uint8_t> bytes = in.rest();

  const auto st = engine::parse_seq_state(bytes, format);
  if (!st) {
    FUZZ_CHECK(st.error().code() == Errc::corrupt, "parse failed with another code: " + st.error().to_string());
    return 0;
  }
  const auto again = engine::serialize_seq_state(*st);
  FUZZ_CHECK(again.size() == bytes.size() && std::memcmp(again.data(), bytes.data(), bytes.size()) == 0,
             "serialize(parse(b)) != b (" + std::to_string(again.size()) + " vs " + std::to_string(bytes.size()) + " bytes)");
  std::size_t n = 0;
  for (const auto& s : st->streams) {
    n += s.cells.size();
    if (s.cells.empty()) continue;
    FUZZ_CHECK(s.k.size() == s.v.size() && !s.k.empty(), "a stream with cells has no (or unequal) K and V layers");
    for (std::size_t l = 0; l < s.k.size(); ++l) {
      FUZZ_CHECK(s.k[l].data.size() == s.k[l].row_bytes * s.cells.size() &&
                     s.v[l].data.size() == s.v[l].row_bytes * s.cells.size(),
                 "rows do not match the cell count");
    }
    check_slicing(s, (s.cells.size() * (size % 7)) / 6);
    check_sorting(s);
  }
  FUZZ_CHECK(n == st->n_cells(), "n_cells() disagrees with the streams");
  check_writer(*st, bytes);
  return 0;
}
