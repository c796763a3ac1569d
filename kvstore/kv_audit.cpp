// The KV audit (see kv_audit.h).
#include "kvstore/kv_audit.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/ggml_types.h"
#include "kvstore/chunk_store.h"

namespace llmd::kvstore {
namespace {

// Rows of one layer's K or V as f32 (n_cells x n elements).
Result<std::vector<float>> as_f32(const engine::KvRows& rows, std::size_t n_cells, std::int64_t& n_per_row) {
  static const engine::GgmlType f32 = *engine::ggml_type_from_name("f32");
  auto n = engine::ggml_row_elements(rows.type, rows.row_bytes);
  if (!n || *n <= 0) return Error(Errc::corrupt, "a KV row is not a whole number of elements");
  n_per_row = *n;
  std::vector<float> out(n_cells * static_cast<std::size_t>(*n));
  if (n_cells == 0) return out;
  LLMD_TRY_STATUS(engine::convert_rows(rows.type, rows.data.data(), f32, out.data(), static_cast<std::int64_t>(n_cells), *n));
  return out;
}

// Compares `stored` with `ref` (same cells expected) under a relative tolerance.
AuditCompare compare(const engine::KvStream& stored, const engine::KvStream& ref, const AuditTolerance::Limits& lim,
                     double abs) {
  AuditCompare c;
  const std::size_t n = ref.cells.size();
  c.cells = static_cast<std::uint32_t>(stored.cells.size());
  if (stored.cells.size() != n) {
    c.error = "holds " + std::to_string(stored.cells.size()) + " cells where " + std::to_string(n) + " are expected";
    return c;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (stored.cells[i].pos != ref.cells[i].pos) {
      c.error = "cell " + std::to_string(i) + " is position " + std::to_string(stored.cells[i].pos) + ", expected " +
                std::to_string(ref.cells[i].pos);
      return c;
    }
  }
  if (stored.k.size() != ref.k.size() || stored.v.size() != ref.v.size()) {
    c.error = "another number of layers";
    return c;
  }
  auto rows_of = [&](const engine::KvRows& a, const engine::KvRows& b, const char* what, std::size_t layer) -> bool {
    if (a.type != b.type || a.row_bytes != b.row_bytes) {
      c.error = std::string(what) + " rows of layer " + std::to_string(layer) + " have another type or size";
      return false;
    }
    std::int64_t per_row = 0;
    auto fa = as_f32(a, n, per_row);
    auto fb = as_f32(b, n, per_row);
    if (!fa || !fb) {
      c.error = (fa ? fb.error() : fa.error()).message();
      return false;
    }
    double max_ref = 0, sum_ref = 0, sum_diff = 0;
    for (float x : *fb) {
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(x)));
      sum_ref += static_cast<double>(x) * x;
    }
    const double allowed = abs + lim.max_rel * max_ref;
    c.max_abs = std::max(c.max_abs, max_ref);
    for (std::size_t i = 0; i < fa->size(); ++i) {
      const double d = std::fabs(static_cast<double>((*fa)[i]) - static_cast<double>((*fb)[i]));
      if (!(d <= allowed * 1e6)) {  // NaN or absurd: report it as it is
        c.max_abs_diff = std::isnan(d) ? d : std::max(c.max_abs_diff, d);
        c.max_excess = std::numeric_limits<double>::infinity();
        c.error = std::string(what) + " of layer " + std::to_string(layer) + " holds a non-finite or absurd value";
        return false;
      }
      c.max_abs_diff = std::max(c.max_abs_diff, d);
      c.max_excess = std::max(c.max_excess, d / allowed);
      sum_diff += d * d;
    }
    if (sum_ref > 0) c.rms_ratio = std::max(c.rms_ratio, std::sqrt(sum_diff / sum_ref));
    return true;
  };
  for (std::size_t l = 0; l < ref.k.size(); ++l) {
    if (!rows_of(stored.k[l], ref.k[l], "K", l) || !rows_of(stored.v[l], ref.v[l], "V", l)) return c;
  }
  c.ok = c.max_excess <= 1.0 && c.rms_ratio <= lim.rms;
  if (!c.ok) {
    c.error = "values differ from the recomputed KV by up to " + std::to_string(c.max_abs_diff) + " (" +
              std::to_string(c.max_excess) + "x the tolerance), rms ratio " + std::to_string(c.rms_ratio) +
              " (limit " + std::to_string(lim.rms) + ")";
  }
  return c;
}

// A state's one stream, in position order; empty stream for an empty state.
Result<engine::KvStream> cells_of(std::span<const std::uint8_t> state, const engine::KvLayout& layout) {
  auto parsed = engine::parse_seq_state(state, {layout.cell_ext_bytes});
  if (!parsed) return parsed.error();
  const int s = parsed->active_stream();
  if (s < 0) return engine::KvStream{};
  engine::KvStream cells = std::move(parsed->streams[static_cast<std::size_t>(s)]);
  engine::sort_cells_by_position(cells);
  if (!(engine::layout_of(cells, layout.cell_ext_bytes) == layout)) {
    return Error(Errc::invalid_argument, "the state does not have the KV layout of the store");
  }
  return cells;
}

// Lossier codecs last: a chunk's KV was computed over whatever its predecessors were restored
// from, so it is judged by the lossiest codec among them and its own.
int lossiness(Codec c) { return tolerance_level(c) * 2 + (c == Codec::q8_0 || c == Codec::q4_0 ? 1 : 0); }
Codec lossier(Codec a, Codec b) { return lossiness(a) >= lossiness(b) ? a : b; }

bool positions_from_zero(const engine::KvStream& cells) {
  for (std::size_t i = 0; i < cells.cells.size(); ++i) {
    if (cells.cells[i].pos != static_cast<engine::Pos>(i)) return false;
  }
  return true;
}

}  // namespace

const AuditTolerance::Limits& AuditTolerance::of(Codec codec) const {
  switch (codec) {
    case Codec::exact:
    case Codec::exact_zstd: return exact;
    case Codec::q8_0: return q8_0;
    case Codec::q4_0: return q4_0;
    case Codec::kivi8: return kivi8;
    case Codec::kivi4: return kivi4;
    case Codec::kivi2: return kivi2;
  }
  return exact;
}

Result<AuditReport> audit_kv(const engine::KvLayout& layout, std::span<const engine::Token> tokens,
                             std::span<const std::uint8_t> reference, std::uint32_t chunk_tokens, std::uint64_t chain_seed,
                             const std::vector<AuditChunkInput>& chunks,
                             const std::optional<AuditResidentInput>& resident, const AuditTolerance& tolerance) {
  if (chunk_tokens == 0) return Error(Errc::invalid_argument, "chunk_tokens must be positive");
  AuditReport report;
  report.tokens = static_cast<std::uint32_t>(tokens.size());
  engine::KvStream ref;
  if (!tokens.empty()) {
    auto cells = cells_of(reference, layout);
    if (!cells) return cells.error().with_context("the recomputed KV");
    ref = std::move(*cells);
    if (ref.cells.size() != tokens.size() || !positions_from_zero(ref)) {
      return Error(Errc::invalid_argument, "the recomputed KV holds " + std::to_string(ref.cells.size()) +
                                               " cells, not positions 0.." + std::to_string(tokens.size() - 1));
    }
  }
  auto note = [&](const AuditCompare& c) {
    ++report.checked;
    if (!c.ok) ++report.failed;
    else report.max_abs_diff = std::max(report.max_abs_diff, c.max_abs_diff);
  };

  // Chunks: the chained hash of the session's tokens says which ones restore could use.
  std::vector<std::uint64_t> expected;
  {
    std::uint64_t h = chain_seed;
    for (std::size_t b = 0; b < tokens.size(); b += chunk_tokens) {
      const std::size_t e = std::min(tokens.size(), b + chunk_tokens);
      h = token_prefix_hash(h, tokens.subspan(b, e - b));
      expected.push_back(h);
    }
  }
  Codec worst = Codec::exact;  // the lossiest copy of any chunk before this one
  for (const AuditChunkInput& in : chunks) {
    Codec worst_here = worst;
    AuditChunkReport cr;
    cr.index = in.index;
    cr.first_pos = in.index * chunk_tokens;
    cr.n_cells = in.n_cells;
    const std::size_t end = static_cast<std::size_t>(cr.first_pos) + in.n_cells;
    // A partial chunk (fewer cells than chunk_tokens) is only ever the session's last one; its hash
    // covers exactly its cells.
    std::uint64_t want = 0;
    bool usable = in.n_cells > 0 && end <= tokens.size() && in.index < expected.size();
    if (usable) {
      if (end == std::min(tokens.size(), static_cast<std::size_t>(cr.first_pos) + chunk_tokens)) {
        want = expected[in.index];
      } else {
        const std::uint64_t before = in.index == 0 ? chain_seed : expected[in.index - 1];
        want = token_prefix_hash(before, tokens.subspan(cr.first_pos, in.n_cells));
      }
      usable = want == in.prefix_hash;
    }
    cr.stale = !usable;
    if (usable) {
      auto slice = engine::slice_cells(ref, cr.first_pos, end);
      for (const AuditCopy& copy : in.copies) {
        AuditCopyReport rep;
        rep.tier = copy.tier;
        if (!copy.error.empty()) {
          rep.compare.error = "unreadable: " + copy.error;
          note(rep.compare);
          cr.copies.push_back(std::move(rep));
          continue;
        }
        auto info = inspect_chunk(copy.blob);
        auto cells = decode_chunk(copy.blob, layout);
        if (!info || !cells || !slice) {
          rep.compare.error = !info ? info.error().message() : !cells ? cells.error().message() : slice.error().message();
        } else {
          rep.codec = info->codec;
          rep.compare = compare(*cells, *slice, tolerance.of(lossier(info->codec, worst)), tolerance.abs);
          worst_here = lossier(worst_here, info->codec);
        }
        note(rep.compare);
        cr.copies.push_back(std::move(rep));
      }
    }
    report.chunks.push_back(std::move(cr));
    worst = worst_here;
  }

  if (resident) {
    AuditResidentReport rr;
    rr.slot = resident->slot;
    rr.tokens = static_cast<std::uint32_t>(resident->tokens.size());
    std::size_t m = 0;
    while (m < resident->tokens.size() && m < tokens.size() && resident->tokens[m] == tokens[m]) ++m;
    rr.matched = static_cast<std::uint32_t>(m);
    auto cells = cells_of(resident->state, layout);
    if (!cells) {
      rr.compare.error = cells.error().message();
    } else if (cells->cells.size() != resident->tokens.size() || !positions_from_zero(*cells)) {
      rr.compare.cells = static_cast<std::uint32_t>(cells->cells.size());
      rr.compare.error = "the slot holds " + std::to_string(cells->cells.size()) +
                         " cells (not positions 0..n-1 of) where the engine says it holds " +
                         std::to_string(resident->tokens.size()) + " tokens";
    } else {
      auto mine = engine::slice_cells(*cells, 0, m);
      auto want = engine::slice_cells(ref, 0, m);
      if (!mine || !want) {
        rr.compare.error = (mine ? want.error() : mine.error()).message();
      } else {
        rr.compare = compare(*mine, *want, tolerance.of(worst), tolerance.abs);
      }
    }
    note(rr.compare);
    report.resident = std::move(rr);
  }
  return report;
}

}  // namespace llmd::kvstore
