// The chunk store's reads, on their callers' threads: load (the restore plan and build),
// stored_chunks (for audits), residency (see chunk_store.h). The plan itself is restore_plan.h's.
#include <chrono>
#include <optional>

#include "kvstore/chunk_store.h"

namespace llmd::kvstore {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

LoadResult ChunkStore::load(const std::string& session, std::span<const engine::Token> history,
                            const RestoreTarget& target, std::vector<std::uint8_t>& buffer) {
  LoadResult r;
  std::vector<Chunk> chunks;
  {
    MutexLock lock(mu_);
    wait_written_back(lock, session);
    SessionEntry* s = tiers_.find(session);
    if (!s) return r;
    const std::uint64_t now = tiers_.tick();
    for (auto& c : s->chunks) c.last_use = now;
    chunks = s->chunks;
  }
  // The plan: the chunks whose token prefix matches the history, by the index. Each blob's own
  // header is checked against the history's hash again below: the index row only says what the
  // file should hold.
  const ChunkMatch match = match_chunks(chunks, history, opt_.chunk_tokens, chain_seed_);
  const std::vector<std::uint64_t>& history_hash = match.hashes;
  // Load only the prefix whose measured load cost plus the recompute of the rest is smallest.
  r.matched = match.matched;
  std::size_t plan = cheapest_prefix(chunks, match.matched, history.size(), costs_.costs());
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
          MutexLock lock(mu_);
          SessionEntry* s = tiers_.find(session);
          if (s && i < s->chunks.size() && s->chunks[i].prefix_hash == c.prefix_hash && !s->chunks[i].ram &&
              tiers_.room_in_ram(read_buf_.size())) {
            c.ram = std::make_shared<const std::vector<std::uint8_t>>(std::move(read_buf_));
            read_buf_ = {};
            tiers_.keep_in_ram(s->chunks[i], c.ram);  // there is room now
          }
        }
      }
      (in_ram ? cost.ram_cells : cost.disk_cells) += c.n_cells;
      (in_ram ? cost.ram_ms : cost.disk_ms) += ms_since(chunk_start);
      at += c.n_cells;
    }
    if (!failed) {
      costs_.learn_load(cost);
      r.tokens = at;
      r.state_bytes = out.bytes().size();
      r.from_ram = from_ram;
      r.from_disk = from_disk;
      break;
    }
    plan = *failed;
  }
  if (r.bad > 0) {
    MutexLock lock(mu_);
    stats_.bad_chunks += r.bad;
    Op op;
    op.kind = Op::Kind::drop_from;
    op.session = session;
    op.from = static_cast<std::uint32_t>(plan);
    enqueue(std::move(op));
  }
  return r;
}

std::vector<StoredChunk> ChunkStore::stored_chunks(const std::string& session) const {
  std::vector<Chunk> chunks;
  {
    MutexLock lock(mu_);
    wait_written_back(lock, session);
    const SessionEntry* s = tiers_.find(session);
    if (!s) return {};
    chunks = s->chunks;
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
    if (!c.present()) continue;
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

SessionResidency ChunkStore::residency(const std::string& session) const {
  SessionResidency r;
  MutexLock lock(mu_);
  const SessionEntry* s = tiers_.find(session);
  if (!s) return r;
  for (const auto& c : s->chunks) {
    if (!c.present()) continue;
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
