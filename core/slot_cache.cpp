// The engine's slots as an LRU cache of sessions' KV (see slot_cache.h).
#include "core/slot_cache.h"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace llmd::core {
namespace {

std::size_t common_prefix(const std::vector<engine::Token>& a, const std::vector<engine::Token>& b) {
  const std::size_t n = std::min(a.size(), b.size());
  std::size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

SlotCache::SlotCache(engine::Context& ctx, kvstore::ChunkStore* chunks, bool keep_resident)
    : ctx_(ctx), chunks_(chunks), keep_resident_(keep_resident), n_(ctx.n_slots()), slots_(n_) {}

std::uint32_t SlotCache::free_slots() const {
  std::uint32_t n = 0;
  for (const Slot& slot : slots_) n += slot.job ? 0 : 1;
  return n;
}

std::vector<SlotView> SlotCache::views() const {
  std::vector<SlotView> views;
  for (std::uint32_t s = 0; s < n_; ++s) {
    views.push_back({s, slots_[s].session_id, static_cast<std::uint32_t>(ctx_.seq_pos_max(static_cast<engine::SeqId>(s)) + 1),
                     slots_[s].job.has_value()});
  }
  return views;
}

std::size_t SlotCache::resident_prefix(const std::string& session_id, const std::vector<engine::Token>& tokens,
                                      std::uint64_t lineage) const {
  std::size_t resident = 0;
  if (keep_resident_ && !session_id.empty()) {
    for (const Slot& slot : slots_) {
      if (slot.session_id == session_id && slot.lineage == lineage) resident = std::max(resident, common_prefix(slot.cached, tokens));
    }
  }
  return resident;
}

std::optional<engine::SeqId> SlotCache::pick(const std::string& session_id) const {
  std::optional<engine::SeqId> best;
  auto consider = [&](std::uint32_t s) {
    if (!best || evicts_before(slots_[s], at(*best))) best = static_cast<engine::SeqId>(s);
  };
  // 1. the session's own slot; 2. an empty slot; 3. the least recently used idle slot (one that
  // holds a parked generation's KV last).
  if (!session_id.empty()) {
    for (std::uint32_t s = 0; s < n_; ++s) {
      if (!slots_[s].job && slots_[s].session_id == session_id) return static_cast<engine::SeqId>(s);
    }
  }
  for (std::uint32_t s = 0; s < n_; ++s) {
    if (!slots_[s].job && slots_[s].session_id.empty() && slots_[s].cached.empty()) return static_cast<engine::SeqId>(s);
  }
  for (std::uint32_t s = 0; s < n_; ++s) {
    if (!slots_[s].job) consider(s);
  }
  return best;
}

std::size_t SlotCache::reserve(engine::SeqId seq, std::uint64_t job_id, const std::string& session_id,
                               const std::vector<engine::Token>& need, std::uint64_t lineage) {
  Slot& slot = at(seq);
  // Reserved from here on: nothing may evict the slot whose KV this job is about to reuse.
  slot.job = job_id;
  std::size_t reuse = 0;
  if (keep_resident_ && !session_id.empty() && slot.session_id == session_id && slot.lineage == lineage) {
    reuse = common_prefix(slot.cached, need);
  }
  if (reuse < slot.cached.size()) {
    save_deferred(seq);  // before any of it is dropped
    if (reuse == 0 || !ctx_.seq_truncate(seq, static_cast<engine::Pos>(reuse))) {
      ctx_.seq_clear(seq);
      reuse = 0;
    }
    slot.cached.resize(reuse);
  }
  if (reuse == 0) {  // whatever it held is gone
    slot.session_id.clear();
    slot.owner.reset();
    slot.lineage = 0;
  }
  return reuse;
}

std::optional<std::size_t> SlotCache::slide(engine::SeqId seq, const std::string& session_id, const Slide& s,
                                            std::uint64_t to_lineage) {
  Slot& slot = at(seq);
  const std::size_t held = slot.cached.size();
  if (session_id.empty() || slot.session_id != session_id || slot.lineage != s.from_lineage) return std::nullopt;
  if (s.head >= s.cut || held <= s.head || common_prefix(slot.cached, s.from) != held) return std::nullopt;
  if (ctx_.seq_pos_max(seq) + 1 != static_cast<engine::Pos>(held)) return std::nullopt;  // not what it says
  if (held <= s.cut) {
    // Nothing after the cut to shift (no turn kept): the head stays, as KV of any lineage (nothing
    // before it ever moves).
    if (!ctx_.seq_truncate(seq, static_cast<engine::Pos>(s.head))) return std::nullopt;
    slot.cached.resize(s.head);
  } else {
    if (!ctx_.seq_drop_range(seq, static_cast<engine::Pos>(s.head), static_cast<engine::Pos>(s.cut))) {
      return std::nullopt;
    }
    slot.cached.erase(slot.cached.begin() + static_cast<std::ptrdiff_t>(s.head),
                      slot.cached.begin() + static_cast<std::ptrdiff_t>(s.cut));
  }
  slot.lineage = to_lineage;
  return slot.cached.size();
}

void SlotCache::unreserve(engine::SeqId seq) { at(seq).job.reset(); }

std::optional<SlotCache::AnonymousHit> SlotCache::best_anonymous(std::uint32_t uid,
                                                                 const std::vector<engine::Token>& tokens) const {
  std::optional<AnonymousHit> best;
  if (!keep_resident_) return best;
  for (std::uint32_t s = 0; s < n_; ++s) {
    const Slot& slot = slots_[s];
    if (slot.job || !slot.owner || !slot.owner->anonymous || slot.owner->uid != uid || slot.lineage != 0) continue;
    const std::size_t n = common_prefix(slot.cached, tokens);
    if (n > 0 && (!best || n > best->tokens)) {
      best = AnonymousHit{static_cast<engine::SeqId>(s), slot.session_id, n, n == slot.cached.size()};
    }
  }
  return best;
}

void SlotCache::rename(engine::SeqId seq, const std::string& key, std::optional<kvstore::KeyOwner> owner) {
  Slot& slot = at(seq);
  if (slot.job) return;
  save_deferred(seq);  // under the key it held until now
  slot.session_id = key;
  slot.owner = owner;
  slot.lineage = 0;
}

void SlotCache::occupy(engine::SeqId seq, const std::string& session_id, std::optional<kvstore::KeyOwner> owner,
                       std::uint64_t lineage) {
  Slot& slot = at(seq);
  slot.session_id = session_id;
  slot.owner = owner;
  slot.lineage = lineage;
  slot.last_used = Clock::now();
  if (chunks_ && !session_id.empty()) chunks_->pin(session_id);
}

void SlotCache::set_cached(engine::SeqId seq, std::span<const engine::Token> tokens,
                           std::optional<std::uint64_t> lineage) {
  at(seq).cached.assign(tokens.begin(), tokens.end());
  if (lineage) at(seq).lineage = *lineage;
}

void SlotCache::touch(engine::SeqId seq) { at(seq).last_used = Clock::now(); }

const std::vector<engine::Token>& SlotCache::cached(engine::SeqId seq) const { return at(seq).cached; }

Status SlotCache::install(engine::SeqId seq, std::span<const std::uint8_t> state, std::size_t tokens) {
  (void)make_room(tokens);  // running jobs may have taken the cells meanwhile
  if (auto st = ctx_.seq_state_set_built(seq, state); !st) {
    ctx_.seq_clear(seq);
    return st;
  }
  return {};
}

void SlotCache::release(engine::SeqId seq, const std::string& session_id) {
  at(seq).job.reset();
  if (chunks_ && !session_id.empty()) chunks_->unpin(session_id);
}

void SlotCache::settle(engine::SeqId seq, const std::string& session_id, std::vector<engine::Token> tokens, bool save,
                       bool defer) {
  Slot& slot = at(seq);
  tokens.resize(std::min(tokens.size(), static_cast<std::size_t>(ctx_.seq_pos_max(seq) + 1)));
  slot.cached = std::move(tokens);
  slot.job.reset();
  slot.last_used = Clock::now();
  slot.unsaved = false;
  if (chunks_ && !session_id.empty()) {
    if (save && !slot.cached.empty()) {
      if (defer && keep_resident_) {
        slot.unsaved = true;
      } else {
        write_back(seq, session_id);
      }
    }
    chunks_->unpin(session_id);
  }
  // One-off work and the no-residency baseline keep nothing for later.
  if (session_id.empty() || !keep_resident_) clear(seq);
}

void SlotCache::clear(engine::SeqId seq) {
  Slot& slot = at(seq);
  save_deferred(seq);
  ctx_.seq_clear(seq);
  slot.cached.clear();
  slot.session_id.clear();
  slot.owner.reset();
  slot.lineage = 0;
}

void SlotCache::drop_kv(engine::SeqId seq) { ctx_.seq_clear(seq); }

void SlotCache::forget(const std::string& session_id) {
  for (std::uint32_t s = 0; s < n_; ++s) {
    if (slots_[s].session_id != session_id || slots_[s].job) continue;
    slots_[s].unsaved = false;  // a deleted session's KV is not written back
    clear(static_cast<engine::SeqId>(s));
  }
}

void SlotCache::cut(const std::string& session_id, std::size_t n) {
  for (std::uint32_t s = 0; s < n_; ++s) {
    Slot& slot = slots_[s];
    if (slot.session_id != session_id || slot.job || slot.cached.size() <= n) continue;
    const auto seq = static_cast<engine::SeqId>(s);
    slot.unsaved = false;  // what follows the new end is not the session's any more
    if (n == 0 || !ctx_.seq_truncate(seq, static_cast<engine::Pos>(n))) {
      clear(seq);
    } else {
      slot.cached.resize(n);
    }
  }
}

bool SlotCache::evict_one_idle() {
  std::optional<std::size_t> victim;
  for (std::size_t s = 0; s < slots_.size(); ++s) {
    const Slot& slot = slots_[s];
    if (slot.job || ctx_.seq_pos_max(static_cast<engine::SeqId>(s)) < 0) continue;
    if (!victim || evicts_before(slot, slots_[*victim])) victim = s;
  }
  if (!victim) return false;
  clear(static_cast<engine::SeqId>(*victim));
  return true;
}

bool SlotCache::make_room(std::size_t cells) {
  while (ctx_.n_ctx() - cells_used() < cells) {
    if (!evict_one_idle()) return false;
  }
  return true;
}

std::uint32_t SlotCache::cells_used() const {
  std::uint32_t n = 0;
  for (std::uint32_t s = 0; s < n_; ++s) n += static_cast<std::uint32_t>(ctx_.seq_pos_max(static_cast<engine::SeqId>(s)) + 1);
  return n;
}

AuditCapture SlotCache::capture(const std::string& session_id) const {
  AuditCapture cap;
  for (std::uint32_t s = 0; s < n_; ++s) {
    const Slot& slot = slots_[s];
    if (slot.job || slot.session_id != session_id) continue;
    auto state = ctx_.seq_state_get(static_cast<engine::SeqId>(s));
    if (!state) {
      spdlog::warn("engine: audit of {}: cannot read slot {}: {}", session_id, s, state.error().message());
      break;
    }
    cap.resident = true;
    cap.slot = s;
    cap.resident_tokens = slot.cached;
    cap.resident_state = std::move(*state);
    break;
  }
  return cap;
}

void SlotCache::save_deferred(engine::SeqId seq) {
  Slot& slot = at(seq);
  if (!slot.unsaved) return;
  slot.unsaved = false;
  if (chunks_ && !slot.session_id.empty() && !slot.cached.empty() &&
      ctx_.seq_pos_max(seq) + 1 >= static_cast<engine::Pos>(slot.cached.size())) {
    write_back(seq, slot.session_id);
  }
}

void SlotCache::write_back(engine::SeqId seq, const std::string& session_id) {
  at(seq).unsaved = false;
  auto state = ctx_.seq_state_get(seq);
  if (!state) {
    spdlog::warn("engine: cannot read the KV of {} for write-back: {}", session_id, state.error().message());
    return;
  }
  chunks_->write_back(session_id, at(seq).cached, std::move(*state), ctx_.attention_importance(seq), at(seq).owner,
                       at(seq).lineage);
}

}  // namespace llmd::core
