// The chunk store's reads: load (the restore plan and build), stored_chunks (for audits), restore
// costs, residency (see chunk_store.h).
#include <chrono>
#include <optional>

#include "kvstore/chunk_store.h"

namespace llmd::kvstore {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

void ChunkStore::wait_written_back(std::unique_lock<std::mutex>& lock, const std::string& session) const {
  cv_.wait(lock, [&] {
    auto it = sessions_.find(session);
    return it == sessions_.end() || it->second.pending == 0 || stop_;
  });
}

LoadResult ChunkStore::load(const std::string& session, std::span<const engine::Token> history,
                            const RestoreTarget& target, std::vector<std::uint8_t>& buffer) {
  LoadResult r;
  std::vector<Chunk> chunks;
  {
    std::unique_lock lock(mu_);
    wait_written_back(lock, session);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return r;
    const std::uint64_t now = ++clock_;
    for (auto& c : it->second.chunks) c.last_use = now;
    chunks = it->second.chunks;
  }
  // The plan: the chunks whose token prefix matches the history, by the index. Each blob's own
  // header is checked against the history's hash again below: the index row only says what the
  // file should hold.
  const std::uint32_t C = opt_.chunk_tokens;
  std::size_t plan = 0;
  std::vector<std::uint64_t> history_hash;
  std::uint64_t h = chain_seed_;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = chunks[i];
    if (!present(c) || i * C + c.n_cells > history.size()) break;
    h = token_prefix_hash(h, history.subspan(i * C, c.n_cells));
    if (h != c.prefix_hash) break;
    history_hash.push_back(h);
    plan = i + 1;
    if (c.n_cells < C) break;  // a partial chunk is the last one
  }
  // Load only the prefix whose measured load cost plus the recompute of the rest is smallest.
  r.matched = plan;
  plan = cheapest_prefix(chunks, plan, history.size());
  // Each chunk is fetched (T1: in memory; T2: read, checksummed) and decoded straight into the
  // state. A bad chunk ends the plan there; the state is then rebuilt for the chunks before it.
  while (plan > 0) {
    std::size_t cells = 0;
    for (std::size_t i = 0; i < plan; ++i) cells += chunks[i].n_cells;
    engine::SeqStateWriter out(buffer, layout_, target.seq, target.n_stream, target.stream, cells);
    std::size_t at = 0, from_ram = 0, from_disk = 0;
    std::optional<std::size_t> failed;
    LoadCostSample cost;
    for (std::size_t i = 0; i < plan; ++i) {
      Chunk& c = chunks[i];
      const bool in_ram = c.ram != nullptr;
      const auto chunk_start = Clock::now();
      Status ok;
      if (!c.ram) {
        const auto t = Clock::now();
        // An upper bound for any encoding of the chunk: the exact rows plus positions and header.
        const std::uint64_t max_bytes = 4096 + c.n_cells * (layout_.bytes_per_cell() + 64);
        ok = opt_.fs->read_file(session_dir(session) / c.file, max_bytes, read_buf_);
        r.read_ms += ms_since(t);
      }
      if (ok) {
        const auto t = Clock::now();
        const std::span<const std::uint8_t> blob = c.ram ? std::span<const std::uint8_t>(*c.ram) : read_buf_;
        auto info = decode_chunk_into(blob, layout_, out, at, scratch_, c.ram ? Verify::header_only : Verify::checksum);
        if (!info) ok = info.error();
        else if (info->n_cells != c.n_cells || info->first_pos != static_cast<engine::Pos>(at)) {
          ok = Error(Errc::corrupt, "the chunk holds other positions than its index says");
        } else if (info->prefix_hash != history_hash[i]) {
          ok = Error(Errc::corrupt, "the chunk was made for other tokens than this history (another session's or an "
                                    "earlier history's file)");
        }
        r.decode_ms += ms_since(t);
      }
      if (!ok) {
        record_error("KV chunk " + std::to_string(i) + " of " + session + " is bad (" + ok.error().message() +
                     "); recomputing from there");
        ++r.bad;
        failed = i;
        break;
      }
      if (c.ram) {
        ++from_ram;
      } else {
        ++from_disk;
        if (opt_.ram_budget > 0) {  // keep what was read from disk in RAM, if it fits
          std::lock_guard lock(mu_);
          auto it = sessions_.find(session);
          if (it != sessions_.end() && i < it->second.chunks.size() &&
              it->second.chunks[i].prefix_hash == c.prefix_hash && !it->second.chunks[i].ram &&
              make_ram_room(read_buf_.size())) {
            stats_.ram.bytes += read_buf_.size();
            c.ram = std::make_shared<const std::vector<std::uint8_t>>(std::move(read_buf_));
            it->second.chunks[i].ram = c.ram;
            read_buf_ = {};
          }
        }
      }
      (in_ram ? cost.ram_cells : cost.disk_cells) += c.n_cells;
      (in_ram ? cost.ram_ms : cost.disk_ms) += ms_since(chunk_start);
      at += c.n_cells;
    }
    if (!failed) {
      learn_load_costs(cost);
      r.tokens = at;
      r.state_bytes = out.bytes().size();
      r.from_ram = from_ram;
      r.from_disk = from_disk;
      break;
    }
    plan = *failed;
  }
  if (r.bad > 0) {
    std::lock_guard lock(mu_);
    stats_.bad_chunks += r.bad;
    Op op;
    op.kind = Op::Kind::drop_from;
    op.session = session;
    op.from = static_cast<std::uint32_t>(plan);
    ops_.push_back(std::move(op));
    cv_.notify_all();
  }
  return r;
}

std::vector<StoredChunk> ChunkStore::stored_chunks(const std::string& session) const {
  std::vector<Chunk> chunks;
  {
    std::unique_lock lock(mu_);
    wait_written_back(lock, session);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return {};
    chunks = it->second.chunks;
  }
  const std::uint32_t C = opt_.chunk_tokens;
  const std::uint64_t layout = layout_id(layout_);
  // A copy is checked as load() checks it, but against the index row (the store has no tokens).
  auto check = [&](const Chunk& c, std::span<const std::uint8_t> blob) -> Status {
    auto info = inspect_chunk(blob, Verify::checksum);
    if (!info) return info.error();
    if (info->layout != layout) return Error(Errc::invalid_argument, "the chunk was made under another KV layout");
    if (info->n_cells != c.n_cells || info->first_pos != static_cast<engine::Pos>(c.index * C)) {
      return Error(Errc::corrupt, "the chunk holds other positions than its index says");
    }
    if (info->prefix_hash != c.prefix_hash) {
      return Error(Errc::corrupt, "the chunk was made for other tokens than its index says");
    }
    return {};
  };
  std::vector<StoredChunk> out;
  std::vector<std::uint8_t> bytes;
  for (const Chunk& c : chunks) {
    if (!present(c)) continue;
    StoredChunk s;
    s.index = c.index;
    s.first_pos = static_cast<engine::Pos>(c.index * C);
    s.n_cells = c.n_cells;
    s.codec = c.codec;
    s.disk_codec = c.disk_codec;
    s.prefix_hash = c.prefix_hash;
    if (c.ram) {
      const Status ok = check(c, *c.ram);
      s.ram = ok ? StoredCopy(*c.ram) : StoredCopy(ok.error());
    }
    if (!c.file.empty()) {
      const std::uint64_t max_bytes = 4096 + c.n_cells * (layout_.bytes_per_cell() + 64);
      Status ok = opt_.fs->read_file(session_dir(session) / c.file, max_bytes, bytes);
      if (ok) ok = check(c, bytes);
      s.disk = ok ? StoredCopy(bytes) : StoredCopy(ok.error());
    }
    out.push_back(std::move(s));
  }
  return out;
}

void ChunkStore::report_recompute(std::size_t tokens, double ms) {
  if (tokens == 0 || !(ms > 0.0)) return;
  std::lock_guard lock(mu_);
  const double per = ms / static_cast<double>(tokens);
  costs_.recompute_ms = costs_.recompute_ms > 0.0 ? 0.7 * costs_.recompute_ms + 0.3 * per : per;
}

void ChunkStore::learn_load_costs(const LoadCostSample& s) {
  std::lock_guard lock(mu_);
  auto learn = [](double& avg, double ms, std::size_t cells) {
    if (cells == 0) return;
    const double per = ms / static_cast<double>(cells);
    avg = avg > 0.0 ? 0.7 * avg + 0.3 * per : per;
  };
  learn(costs_.ram_ms, s.ram_ms, s.ram_cells);
  learn(costs_.disk_ms, s.disk_ms, s.disk_cells);
}

RestoreCosts ChunkStore::costs() const {
  std::lock_guard lock(mu_);
  return costs_;
}

std::size_t ChunkStore::cheapest_prefix(const std::vector<Chunk>& chunks, std::size_t matched,
                                        std::size_t history) const {
  const RestoreCosts k = costs();
  if (k.recompute_ms <= 0.0) return matched;  // nothing measured yet: loading is the safe bet
  // Total time if the first n chunks are loaded and the rest of the history is recomputed. A cost
  // not measured yet (a tier never read) counts as free, so that it gets measured.
  double best = static_cast<double>(history) * k.recompute_ms, load = 0.0;
  std::size_t best_n = 0, cells = 0;
  for (std::size_t i = 0; i < matched; ++i) {
    load += static_cast<double>(chunks[i].n_cells) * (chunks[i].ram ? k.ram_ms : k.disk_ms);
    cells += chunks[i].n_cells;
    const double total = load + static_cast<double>(history - cells) * k.recompute_ms;
    if (total <= best) {
      best = total;
      best_n = i + 1;
    }
  }
  return best_n;
}

SessionResidency ChunkStore::residency(const std::string& session) const {
  SessionResidency r;
  std::lock_guard lock(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return r;
  for (const auto& c : it->second.chunks) {
    if (!present(c)) continue;
    ++r.chunks;
    r.tokens += c.n_cells;
    if (c.ram) {
      ++r.ram_chunks;
      r.ram_bytes += c.ram->size();
    }
    if (!c.file.empty()) {
      ++r.disk_chunks;
      r.disk_bytes += c.disk_bytes;
    }
    ++r.chunks_by_codec[static_cast<std::size_t>(c.ram ? c.codec : c.disk_codec)];
  }
  return r;
}

}  // namespace llmd::kvstore
