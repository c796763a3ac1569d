// Sequence KV state parsing, serialisation, slicing and joining (see seq_state.h).
#include "engine/seq_state.h"

#include <algorithm>

#include <cstring>
#include <string>

namespace llmd::engine {
namespace {

// Limits far above any real context, there only to keep hostile input from asking for absurd
// allocations before the size checks catch it.
constexpr std::uint32_t kMaxStreams = 4096;
constexpr std::uint32_t kMaxLayers = 4096;
constexpr std::uint32_t kMaxSeqIdsPerCell = 4096;
constexpr std::uint32_t kMaxCellExtBytes = 256;

class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> b) : b_(b) {}

  template <typename T>
  bool read(T& v) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(&v, b_.data() + off_, sizeof(T));
    off_ += sizeof(T);
    return true;
  }
  bool read_bytes(std::uint8_t* dst, std::size_t n) {
    if (remaining() < n) return false;
    if (n > 0) std::memcpy(dst, b_.data() + off_, n);
    off_ += n;
    return true;
  }
  std::size_t remaining() const { return b_.size() - off_; }
  std::size_t offset() const { return off_; }

 private:
  std::span<const std::uint8_t> b_;
  std::size_t off_ = 0;
};

class Writer {
 public:
  explicit Writer(std::vector<std::uint8_t>& out) : out_(out) {}
  template <typename T>
  void write(const T& v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void write_bytes(const std::uint8_t* p, std::size_t n) { out_.insert(out_.end(), p, p + n); }

 private:
  std::vector<std::uint8_t>& out_;
};

Error corrupt(const std::string& what, std::size_t offset) {
  return Error(Errc::corrupt, "sequence state: " + what + " (at byte " + std::to_string(offset) + ")");
}

// True if a*b fits in size_t and is <= limit.
bool product_fits(std::uint64_t a, std::uint64_t b, std::size_t limit) {
  if (a == 0 || b == 0) return true;
  if (a > limit / b) return false;
  return a * b <= limit;
}

Result<KvStream> parse_stream(Reader& r, std::uint32_t cell_count, std::uint32_t ext_bytes) {
  KvStream s;
  // Each cell needs at least pos + n_seq_id: refuse counts the remaining bytes cannot hold.
  if (!product_fits(cell_count, 8 + ext_bytes, r.remaining())) return corrupt("cell count exceeds the data", r.offset());
  s.cells.resize(cell_count);
  for (auto& c : s.cells) {
    std::uint32_t n_seq = 0;
    if (!r.read(c.pos) || !r.read(n_seq)) return corrupt("truncated cell", r.offset());
    if (n_seq > kMaxSeqIdsPerCell) return corrupt("implausible sequence count in a cell", r.offset());
    c.ext.resize(ext_bytes);
    if (!r.read_bytes(c.ext.data(), ext_bytes)) return corrupt("truncated cell extension", r.offset());
    c.seq_ids.resize(n_seq);
    for (auto& id : c.seq_ids) {
      if (!r.read(id)) return corrupt("truncated cell sequence ids", r.offset());
    }
  }
  std::uint32_t v_trans = 0, n_layer = 0;
  if (!r.read(v_trans) || !r.read(n_layer)) return corrupt("truncated layer header", r.offset());
  if (v_trans > 1) return corrupt("v_trans is neither 0 nor 1", r.offset());
  if (n_layer == 0 || n_layer > kMaxLayers) return corrupt("implausible layer count", r.offset());
  s.v_trans = v_trans != 0;

  s.k.resize(n_layer);
  for (auto& k : s.k) {
    if (!r.read(k.type) || !r.read(k.row_bytes)) return corrupt("truncated K layer header", r.offset());
    if (k.row_bytes == 0 || !product_fits(k.row_bytes, cell_count, r.remaining())) {
      return corrupt("K rows exceed the data", r.offset());
    }
    k.data.resize(static_cast<std::size_t>(k.row_bytes * cell_count));
    r.read_bytes(k.data.data(), k.data.size());
  }
  s.v.resize(n_layer);
  for (auto& v : s.v) {
    if (!s.v_trans) {
      if (!r.read(v.type) || !r.read(v.row_bytes)) return corrupt("truncated V layer header", r.offset());
      if (v.row_bytes == 0 || !product_fits(v.row_bytes, cell_count, r.remaining())) {
        return corrupt("V rows exceed the data", r.offset());
      }
      v.data.resize(static_cast<std::size_t>(v.row_bytes * cell_count));
      r.read_bytes(v.data.data(), v.data.size());
      continue;
    }
    std::uint32_t n_embd_v = 0;
    if (!r.read(v.type) || !r.read(v.elem_bytes) || !r.read(n_embd_v)) {
      return corrupt("truncated transposed V layer header", r.offset());
    }
    if (v.elem_bytes == 0 || n_embd_v == 0) return corrupt("empty transposed V layer", r.offset());
    v.row_bytes = static_cast<std::uint64_t>(v.elem_bytes) * n_embd_v;
    if (!product_fits(v.row_bytes, cell_count, r.remaining())) return corrupt("V elements exceed the data", r.offset());
    v.data.resize(static_cast<std::size_t>(v.row_bytes * cell_count));
    // Stored dimension-major (for each dimension j, every cell's element); hold it cell-major.
    std::vector<std::uint8_t> column(static_cast<std::size_t>(v.elem_bytes) * cell_count);
    for (std::uint32_t j = 0; j < n_embd_v; ++j) {
      r.read_bytes(column.data(), column.size());
      for (std::uint32_t c = 0; c < cell_count; ++c) {
        std::memcpy(v.data.data() + c * v.row_bytes + static_cast<std::size_t>(j) * v.elem_bytes,
                    column.data() + static_cast<std::size_t>(c) * v.elem_bytes, v.elem_bytes);
      }
    }
  }
  return s;
}

void write_stream(Writer& w, const KvStream& s, std::uint32_t ext_bytes) {
  const auto cell_count = static_cast<std::uint32_t>(s.cells.size());
  w.write(cell_count);
  if (cell_count == 0) return;
  for (const auto& c : s.cells) {
    w.write(c.pos);
    w.write(static_cast<std::uint32_t>(c.seq_ids.size()));
    // ext is written as stored; a cell without it (built by hand) gets zeros.
    for (std::uint32_t i = 0; i < ext_bytes; ++i) w.write(i < c.ext.size() ? c.ext[i] : std::uint8_t{0});
    for (SeqId id : c.seq_ids) w.write(id);
  }
  w.write(static_cast<std::uint32_t>(s.v_trans ? 1 : 0));
  w.write(static_cast<std::uint32_t>(s.k.size()));
  for (const auto& k : s.k) {
    w.write(k.type);
    w.write(k.row_bytes);
    w.write_bytes(k.data.data(), k.data.size());
  }
  for (const auto& v : s.v) {
    w.write(v.type);
    if (!s.v_trans) {
      w.write(v.row_bytes);
      w.write_bytes(v.data.data(), v.data.size());
      continue;
    }
    const std::uint32_t n_embd_v = v.elem_bytes ? static_cast<std::uint32_t>(v.row_bytes / v.elem_bytes) : 0;
    w.write(v.elem_bytes);
    w.write(n_embd_v);
    for (std::uint32_t j = 0; j < n_embd_v; ++j) {
      for (std::uint32_t c = 0; c < cell_count; ++c) {
        w.write_bytes(v.data.data() + c * v.row_bytes + static_cast<std::size_t>(j) * v.elem_bytes, v.elem_bytes);
      }
    }
  }
}

}  // namespace

std::size_t SeqState::n_cells() const {
  std::size_t n = 0;
  for (const auto& s : streams) n += s.cells.size();
  return n;
}

int SeqState::active_stream() const {
  for (std::size_t i = 0; i < streams.size(); ++i) {
    if (!streams[i].cells.empty()) return static_cast<int>(i);
  }
  return -1;
}

std::uint64_t KvLayout::bytes_per_cell() const {
  std::uint64_t n = 0;
  for (auto b : k_row_bytes) n += b;
  for (auto b : v_row_bytes) n += b;
  return n;
}

Result<SeqState> parse_seq_state(std::span<const std::uint8_t> bytes, const SeqStateFormat& format) {
  if (format.cell_ext_bytes > kMaxCellExtBytes) return Error(Errc::invalid_argument, "implausible cell extension size");
  Reader r(bytes);
  SeqState st;
  st.cell_ext_bytes = format.cell_ext_bytes;
  std::uint32_t n_stream = 0;
  if (!r.read(st.magic) || !r.read(st.seq_id) || !r.read(n_stream)) return corrupt("truncated header", r.offset());
  if (st.magic != kSeqStateMagic) return corrupt("wrong magic", 0);
  if (n_stream == 0 || n_stream > kMaxStreams) return corrupt("implausible stream count", r.offset());
  st.streams.reserve(n_stream);
  for (std::uint32_t i = 0; i < n_stream; ++i) {
    std::uint32_t cell_count = 0;
    if (!r.read(cell_count)) return corrupt("truncated stream header", r.offset());
    if (cell_count == 0) {
      st.streams.emplace_back();
      continue;
    }
    auto s = parse_stream(r, cell_count, format.cell_ext_bytes);
    if (!s) return s.error();
    st.streams.push_back(std::move(*s));
  }
  if (r.remaining() != 0) return corrupt(std::to_string(r.remaining()) + " trailing bytes", r.offset());
  return st;
}

std::vector<std::uint8_t> serialize_seq_state(const SeqState& state) {
  std::vector<std::uint8_t> out;
  std::size_t size = 12;
  for (const auto& s : state.streams) {
    size += 4 + s.cells.size() * (12 + state.cell_ext_bytes) + 8;
    for (const auto& k : s.k) size += 12 + k.data.size();
    for (const auto& v : s.v) size += 12 + v.data.size();
  }
  out.reserve(size);
  Writer w(out);
  w.write(state.magic);
  w.write(state.seq_id);
  w.write(static_cast<std::uint32_t>(state.streams.size()));
  for (const auto& s : state.streams) write_stream(w, s, state.cell_ext_bytes);
  return out;
}

namespace {

template <typename T>
void put_at(std::vector<std::uint8_t>& out, std::size_t& at, T v) {
  std::memcpy(out.data() + at, &v, sizeof(T));
  at += sizeof(T);
}

}  // namespace

SeqStateWriter::SeqStateWriter(std::vector<std::uint8_t>& buffer, const KvLayout& layout, SeqId seq,
                               std::uint32_t n_stream, std::uint32_t stream, std::size_t n_cells)
    : buf_(buffer), layout_(layout), n_cells_(n_cells), seq_(seq) {
  cell_bytes_ = 4 + 4 + layout.cell_ext_bytes + 4;
  std::size_t size = 12 + 4 * static_cast<std::size_t>(n_stream);
  if (n_cells > 0) {
    size += n_cells * cell_bytes_ + 8;
    for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
      size += 12 + n_cells * layout.k_row_bytes[l];
      size += 12 + n_cells * layout.v_row_bytes[l];  // type + row size, or type + element size + dims
    }
  }
  size_ = size;
  // Grown with headroom (a session grows a little every turn), then reused without clearing.
  if (buf_.size() < size_) buf_.resize(size_ + size_ / 4);
  std::size_t at = 0;
  put_at(buf_, at, kSeqStateMagic);
  put_at(buf_, at, seq);
  put_at(buf_, at, n_stream);
  for (std::uint32_t s = 0; s < n_stream; ++s) {
    if (s != stream || n_cells == 0) {
      put_at(buf_, at, std::uint32_t{0});
      continue;
    }
    put_at(buf_, at, static_cast<std::uint32_t>(n_cells));
    cells_at_ = at;
    at += n_cells * cell_bytes_;
    put_at(buf_, at, static_cast<std::uint32_t>(layout.v_trans ? 1 : 0));
    put_at(buf_, at, layout.n_layer);
    k_at_.resize(layout.n_layer);
    v_at_.resize(layout.n_layer);
    for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
      put_at(buf_, at, layout.k_type[l]);
      put_at(buf_, at, layout.k_row_bytes[l]);
      k_at_[l] = at;
      at += n_cells * layout.k_row_bytes[l];
    }
    for (std::uint32_t l = 0; l < layout.n_layer; ++l) {
      put_at(buf_, at, layout.v_type[l]);
      if (!layout.v_trans) {
        put_at(buf_, at, layout.v_row_bytes[l]);
      } else {
        const std::uint32_t elem = layout.v_elem_bytes[l];
        put_at(buf_, at, elem);
        put_at(buf_, at, static_cast<std::uint32_t>(elem ? layout.v_row_bytes[l] / elem : 0));
      }
      v_at_[l] = at;
      at += n_cells * layout.v_row_bytes[l];
    }
  }
}

void SeqStateWriter::set_cell(std::size_t i, Pos pos, const std::uint8_t* ext) {
  std::size_t at = cells_at_ + i * cell_bytes_;
  put_at(buf_, at, pos);
  put_at(buf_, at, std::uint32_t{1});
  if (layout_.cell_ext_bytes > 0) {
    if (ext) std::memcpy(buf_.data() + at, ext, layout_.cell_ext_bytes);
    else std::memset(buf_.data() + at, 0, layout_.cell_ext_bytes);
    at += layout_.cell_ext_bytes;
  }
  put_at(buf_, at, seq_);
}

std::uint8_t* SeqStateWriter::k_rows(std::uint32_t layer, std::size_t cell) {
  return buf_.data() + k_at_[layer] + cell * layout_.k_row_bytes[layer];
}

std::uint8_t* SeqStateWriter::v_rows(std::uint32_t layer, std::size_t cell) {
  if (layout_.v_trans) return nullptr;
  return buf_.data() + v_at_[layer] + cell * layout_.v_row_bytes[layer];
}

void SeqStateWriter::put_v_rows(std::uint32_t layer, std::size_t cell, std::size_t n, const std::uint8_t* rows) {
  const std::uint64_t row = layout_.v_row_bytes[layer];
  if (!layout_.v_trans) {
    std::memcpy(v_rows(layer, cell), rows, n * row);
    return;
  }
  const std::uint32_t elem = layout_.v_elem_bytes[layer];
  const std::size_t dims = elem ? row / elem : 0;
  std::uint8_t* base = buf_.data() + v_at_[layer];
  for (std::size_t j = 0; j < dims; ++j) {
    std::uint8_t* dst = base + (j * n_cells_ + cell) * elem;
    for (std::size_t c = 0; c < n; ++c) std::memcpy(dst + c * elem, rows + c * row + j * elem, elem);
  }
}

KvLayout layout_of(const KvStream& stream, std::uint32_t cell_ext_bytes) {
  KvLayout l;
  l.n_layer = static_cast<std::uint32_t>(stream.k.size());
  l.v_trans = stream.v_trans;
  l.cell_ext_bytes = cell_ext_bytes;
  for (const auto& k : stream.k) {
    l.k_type.push_back(k.type);
    l.k_row_bytes.push_back(k.row_bytes);
  }
  for (const auto& v : stream.v) {
    l.v_type.push_back(v.type);
    l.v_row_bytes.push_back(v.row_bytes);
    if (stream.v_trans) l.v_elem_bytes.push_back(v.elem_bytes);
  }
  return l;
}

Result<KvStream> slice_cells(const KvStream& stream, std::size_t begin, std::size_t end) {
  if (begin > end || end > stream.cells.size()) {
    return Error(Errc::invalid_argument, "cell range [" + std::to_string(begin) + ", " + std::to_string(end) +
                                             ") is outside the stream's " + std::to_string(stream.cells.size()) +
                                             " cells");
  }
  KvStream out;
  out.v_trans = stream.v_trans;
  out.cells.assign(stream.cells.begin() + static_cast<std::ptrdiff_t>(begin),
                   stream.cells.begin() + static_cast<std::ptrdiff_t>(end));
  auto cut = [&](const std::vector<KvRows>& from, std::vector<KvRows>& to) {
    to.reserve(from.size());
    for (const auto& rows : from) {
      KvRows r;
      r.type = rows.type;
      r.row_bytes = rows.row_bytes;
      r.elem_bytes = rows.elem_bytes;
      const auto b = static_cast<std::ptrdiff_t>(begin * rows.row_bytes);
      const auto e = static_cast<std::ptrdiff_t>(end * rows.row_bytes);
      r.data.assign(rows.data.begin() + b, rows.data.begin() + e);
      to.push_back(std::move(r));
    }
  };
  cut(stream.k, out.k);
  cut(stream.v, out.v);
  return out;
}

void sort_cells_by_position(KvStream& stream) {
  const auto by_pos = [](const KvCell& a, const KvCell& b) { return a.pos < b.pos; };
  if (std::is_sorted(stream.cells.begin(), stream.cells.end(), by_pos)) return;
  const std::size_t n = stream.cells.size();
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return stream.cells[a].pos < stream.cells[b].pos; });
  std::vector<KvCell> cells;
  cells.reserve(n);
  for (std::size_t i : order) cells.push_back(std::move(stream.cells[i]));
  stream.cells = std::move(cells);
  auto permute = [&](std::vector<KvRows>& layers) {
    for (KvRows& rows : layers) {
      std::vector<std::uint8_t> out(rows.data.size());
      for (std::size_t i = 0; i < n; ++i) {
        std::memcpy(out.data() + i * rows.row_bytes, rows.data.data() + order[i] * rows.row_bytes, rows.row_bytes);
      }
      rows.data = std::move(out);
    }
  };
  permute(stream.k);
  permute(stream.v);
}

Status append_cells(KvStream& dst, const KvStream& src) {
  if (src.cells.empty()) return {};
  if (dst.cells.empty() && dst.k.empty()) {
    dst = src;
    return {};
  }
  if (!(layout_of(dst, 0) == layout_of(src, 0))) {
    return Error(Errc::invalid_argument, "cannot join KV rows of different layouts");
  }
  dst.cells.insert(dst.cells.end(), src.cells.begin(), src.cells.end());
  for (std::size_t l = 0; l < dst.k.size(); ++l) {
    dst.k[l].data.insert(dst.k[l].data.end(), src.k[l].data.begin(), src.k[l].data.end());
    dst.v[l].data.insert(dst.v[l].data.end(), src.v[l].data.begin(), src.v[l].data.end());
  }
  return {};
}

}  // namespace llmd::engine
