// The chunk store's reads, on their callers' threads: load (the restore plan and build),
// stored_chunks (for audits), residency (see chunk_store.h). The plan itself is restore_plan.h's.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <optional>

#include "kvstore/chunk_store.h"

namespace llmd::kvstore {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

std::uint64_t ChunkStore::lineage_seed(std::uint64_t lineage) const {
  if (lineage == 0) return chain_seed_;
  // The lineage as tokens no tokenizer makes (negative ids), hashed onto the store's seed.
  const std::array<engine::Token, 4> mark = {-1, static_cast<engine::Token>(lineage & 0x7fffffffu),
                                             static_cast<engine::Token>((lineage >> 31) & 0x7fffffffu),
                                             static_cast<engine::Token>(lineage >> 62)};
  return token_prefix_hash(chain_seed_, mark);
}

std::vector<std::uint64_t> ChunkStore::full_chunk_hashes(std::span<const engine::Token> tokens,
                                                         std::uint64_t seed) const {
  const std::uint32_t C = opt_.chunk_tokens;
  std::vector<std::uint64_t> out;
  out.reserve(tokens.size() / C);
  std::uint64_t h = seed;
  for (std::size_t b = 0; b + C <= tokens.size(); b += C) {
    h = token_prefix_hash(h, tokens.subspan(b, C));
    out.push_back(h);
  }
  return out;
}

std::vector<ChunkStore::Planned> ChunkStore::plan_chain(const std::string& session, std::optional<std::uint32_t> uid,
                                                        std::span<const engine::Token> history,
                                                        std::span<const std::uint64_t> full,
                                                        std::uint64_t seed) const {
  const std::uint32_t C = opt_.chunk_tokens;
  std::vector<const std::pair<const std::string, SessionEntry>*> keys;
  if (auto it = tiers_.sessions().find(session); it != tiers_.sessions().end()) keys.push_back(&*it);
  if (uid) {
    if (const std::set<std::string>* mine = tiers_.keys_of(*uid)) {
      for (const std::string& k : *mine) {
        if (k == session) continue;
        if (auto it = tiers_.sessions().find(k); it != tiers_.sessions().end()) keys.push_back(&*it);
      }
    }
  }
  std::vector<Planned> chain;
  for (std::size_t i = 0;; ++i) {
    const std::size_t begin = i * C;
    if (begin >= history.size()) break;
    const std::uint64_t prev = i == 0 ? seed : chain.back().hash;
    bool found = false;
    Planned chosen;
    for (const auto* kv : keys) {
      const SessionEntry& e = kv->second;
      if (i >= e.chunks.size()) continue;
      const Chunk& c = e.chunks[i];
      if (!c.present() || begin + c.n_cells > history.size()) continue;
      const std::uint64_t want = c.n_cells == C && i < full.size()
                                     ? full[i]
                                     : token_prefix_hash(prev, history.subspan(begin, c.n_cells));
      if (c.prefix_hash != want) continue;
      const bool better = !found || c.n_cells > chosen.chunk.n_cells ||
                          (c.n_cells == chosen.chunk.n_cells && c.ram && !chosen.chunk.ram);
      if (!better) continue;
      chosen = Planned{c, kv->first, want};
      found = true;
    }
    if (!found) break;
    chain.push_back(chosen);
    if (chosen.chunk.n_cells < C) break;  // a partial chunk ends every chain
  }
  return chain;
}

PrefixLookup ChunkStore::find_prefix(std::uint32_t uid, std::span<const engine::Token> tokens) const {
  PrefixLookup out;
  const std::vector<std::uint64_t> full = full_chunk_hashes(tokens, chain_seed_);
  MutexLock lock(mu_);
  const std::set<std::string>* keys = tiers_.keys_of(uid);
  if (!keys) return out;
  for (const std::string& k : *keys) {
    const SessionEntry* e = tiers_.find(k);
    if (!e || !e->anonymous || e->in_use()) continue;
    const std::vector<Planned> own = plan_chain(k, std::nullopt, tokens, full, chain_seed_);
    std::size_t n = 0, held = 0;
    for (const Planned& p : own) n += p.chunk.n_cells;
    for (const Chunk& c : e->chunks) held += c.present() ? c.n_cells : 0;
    // Only an entry the tokens extend is continued: one they leave is another conversation (or
    // an earlier branch), whose chunks the new one's write-back must not replace.
    if (n == held && n > out.entry_tokens) {
      out.entry = k;
      out.entry_tokens = n;
    }
  }
  const std::vector<Planned> all = plan_chain(out.entry, uid, tokens, full, chain_seed_);
  for (const Planned& p : all) out.covered += p.chunk.n_cells;
  return out;
}

ChunkStore::Fetched ChunkStore::fetch_decode(Chunk& c, const std::string& owner, std::uint64_t hash,
                                             std::size_t first_cell, engine::SeqStateWriter& out, Buffers& buf) {
  Fetched f;
  f.in_ram = c.ram != nullptr;
  if (!c.ram) {
    const auto t = Clock::now();
    // An upper bound for any encoding of the chunk: the exact rows plus positions and header.
    const std::uint64_t max_bytes = 4096 + c.n_cells * (layout_.bytes_per_cell() + 64);
    f.ok = opt_.fs->read_file(opt_.dir / c.file, max_bytes, buf.read);
    f.read_ms = ms_since(t);
    if (!f.ok) return f;
  }
  const auto t = Clock::now();
  const std::span<const std::uint8_t> blob = c.ram ? std::span<const std::uint8_t>(*c.ram) : buf.read;
  auto info = decode_chunk_into(blob, layout_, out, first_cell, buf.scratch,
                                c.ram ? Verify::header_only : Verify::checksum);
  if (!info) f.ok = info.error();
  else if (info->n_cells != c.n_cells || info->first_pos != static_cast<engine::Pos>(first_cell)) {
    f.ok = Error(Errc::corrupt, "the chunk holds other positions than its index says");
  } else if (info->prefix_hash != hash) {
    f.ok = Error(Errc::corrupt, "the chunk was made for other tokens than this history (another session's or an "
                                "earlier history's file)");
  }
  f.decode_ms = ms_since(t);
  if (f.ok && !c.ram && opt_.ram_budget > 0) {  // keep what was read from disk in RAM, if it fits
    MutexLock lock(mu_);
    SessionEntry* s = tiers_.find(owner);
    if (s && c.index < s->chunks.size() && s->chunks[c.index].prefix_hash == c.prefix_hash &&
        !s->chunks[c.index].ram && tiers_.room_in_ram(buf.read.size())) {
      c.ram = std::make_shared<const std::vector<std::uint8_t>>(std::move(buf.read));
      buf.read = {};
      tiers_.keep_in_ram(s->chunks[c.index], c.ram);  // there is room now
    }
  }
  return f;
}

void ChunkStore::run_workers(std::size_t n_chunks, std::size_t cells, const std::function<void(Buffers&)>& work) {
  // Threads only where there is enough to share: starting one costs tens of microseconds, a
  // chunk of a small model's KV about as much to copy.
  const std::size_t threads =
      std::max<std::size_t>(1, std::min({static_cast<std::size_t>(restore_threads_), n_chunks / 2, cells / 128}));
  if (buffers_.size() < threads) buffers_.resize(threads);
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  for (std::size_t t = 1; t < threads; ++t) helpers.emplace_back([&work, this, t] { work(buffers_[t]); });
  work(buffers_[0]);
  for (std::thread& h : helpers) h.join();
}

LoadResult ChunkStore::load(const std::string& session, std::span<const engine::Token> history,
                            const RestoreTarget& target, std::vector<std::uint8_t>& buffer,
                            std::optional<std::uint32_t> uid, std::uint64_t lineage) {
  LoadResult r;
  const std::uint64_t seed = lineage_seed(lineage);
  const std::vector<std::uint64_t> full = full_chunk_hashes(history, seed);
  std::vector<Chunk> chunks;
  std::vector<std::string> owners;  // the key holding each chunk
  std::vector<std::uint64_t> history_hash;
  {
    MutexLock lock(mu_);
    wait_written_back(lock, session);
    // The plan: the chunks whose token prefix matches the history, by the index (the session's
    // own, or another key's of the same uid). Each blob's own header is checked against the
    // history's hash again below: the index row only says what the file should hold.
    const std::uint64_t now = tiers_.tick();
    if (SessionEntry* s = tiers_.find(session)) {
      for (auto& c : s->chunks) c.last_use = now;
    }
    for (Planned& p : plan_chain(session, uid, history, full, seed)) {
      if (p.key != session) {
        if (SessionEntry* donor = tiers_.find(p.key); donor && p.chunk.index < donor->chunks.size()) {
          donor->chunks[p.chunk.index].last_use = now;
        }
      }
      chunks.push_back(std::move(p.chunk));
      owners.push_back(std::move(p.key));
      history_hash.push_back(p.hash);
    }
  }
  if (chunks.empty()) return r;
  // Load only the prefix whose measured load cost plus the recompute of the rest is smallest. Not
  // for shifted KV (lineage != 0): a recompute does not give it back, so its chunks are the only
  // copy of the session's state and all of them are loaded.
  r.matched = chunks.size();
  std::size_t plan = lineage != 0 ? chunks.size()
                                  : cheapest_prefix(chunks, chunks.size(), history.size(), costs_.costs());
  // Each chunk is fetched (T1: in memory; T2: read, checksummed) and decoded straight into the
  // state, by up to restore_threads threads (chunks write disjoint cells). A bad chunk ends the
  // plan there; the state is then rebuilt for the chunks before it.
  while (plan > 0) {
    std::vector<std::size_t> first(plan);  // each chunk's first cell in the state
    std::size_t cells = 0;
    for (std::size_t i = 0; i < plan; ++i) {
      first[i] = cells;
      cells += chunks[i].n_cells;
    }
    engine::SeqStateWriter out(buffer, layout_, target.seq, target.n_stream, target.stream, cells);
    std::vector<Fetched> got(plan);
    std::atomic<std::size_t> next{0}, failed{plan};  // failed: the first bad chunk's index (plan: none)
    auto work = [&](Buffers& buf) {
      for (std::size_t i = next++; i < plan && i < failed.load(); i = next++) {
        got[i] = fetch_decode(chunks[i], owners[i], history_hash[i], first[i], out, buf);
        if (!got[i].ok) {
          std::size_t f = failed.load();
          while (i < f && !failed.compare_exchange_weak(f, i)) {
          }
        }
      }
    };
    const auto start = Clock::now();
    run_workers(plan, cells, work);
    const double wall = ms_since(start);
    // Every chunk before the first bad one was done (workers take them in order).
    const std::size_t bad = failed.load();
    if (bad < plan) {
      record_error("KV chunk " + std::to_string(bad) + " of " + owners[bad] + " is bad (" +
                   got[bad].ok.error().message() + "); recomputing from there");
      ++r.bad;
      plan = bad;
      continue;
    }
    // Per-chunk times add up across threads; the cost model learns wall time (scaled by each).
    double sum = 0;
    for (const Fetched& f : got) sum += f.read_ms + f.decode_ms;
    const double scale = sum > 0 ? wall / sum : 0.0;
    LoadCostSample cost;
    std::size_t from_ram = 0, from_disk = 0;
    for (std::size_t i = 0; i < plan; ++i) {
      const Fetched& f = got[i];
      (f.in_ram ? from_ram : from_disk) += 1;
      (f.in_ram ? cost.ram_cells : cost.disk_cells) += chunks[i].n_cells;
      (f.in_ram ? cost.ram_ms : cost.disk_ms) += (f.read_ms + f.decode_ms) * scale;
      r.read_ms += f.read_ms * scale;
      r.decode_ms += f.decode_ms * scale;
    }
    costs_.learn_load(cost);
    r.tokens = cells;
    r.state_bytes = out.bytes().size();
    r.from_ram = from_ram;
    r.from_disk = from_disk;
    for (std::size_t i = 0; i < plan; ++i) r.from_other += owners[i] != session ? 1 : 0;
    break;
  }
  if (r.from_other > 0) {
    MutexLock lock(mu_);
    stats_.chunks_from_other_keys += r.from_other;
  }
  if (r.bad > 0) {
    // The bad chunk and its successors go from the key that holds it.
    MutexLock lock(mu_);
    stats_.bad_chunks += r.bad;
    Op op;
    op.kind = Op::Kind::drop_from;
    op.session = owners[plan];
    op.from = chunks[plan].index;
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
      Status ok = opt_.fs->read_file(opt_.dir / c.file, max_bytes, bytes);
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
