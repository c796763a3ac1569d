// The Service's fork and rewind of sessions (see service.h): branching a conversation, and cutting
// it back so that an app can edit or regenerate a turn.
#include <boost/asio/post.hpp>

#include "core/chat_turns.h"
#include "core/service.h"
#include "core/service_internal.h"

namespace llmd::core {
namespace asio = boost::asio;
using namespace detail;

namespace {

// How many messages a rewind keeps, from the request and the session's messages (checked: one
// way given, something dropped, never the system message, whole turns only).
Result<std::size_t> messages_kept(const Service::Rewind& how, const std::vector<kvstore::MessageRecord>& msgs) {
  const char* field = how.drop_last ? "drop_last" : "keep";
  if (how.drop_last.has_value() == how.keep.has_value()) {
    return Error(Errc::invalid_argument, "a rewind takes exactly one of drop_last and keep").with_param(field);
  }
  const std::size_t n = msgs.size();
  const std::size_t fixed = !msgs.empty() && msgs[0].role == "system" ? 1 : 0;  // never dropped
  const std::size_t droppable = n - fixed;
  if (droppable == 0) {
    return Error(Errc::invalid_argument, std::string("the session has nothing to drop") +
                                             (fixed ? " (its system message stays)" : ""))
        .with_param(field);
  }
  std::size_t keep = 0;
  if (how.drop_last) {
    if (*how.drop_last == 0 || *how.drop_last > droppable) {
      return Error(Errc::invalid_argument, "drop_last must be between 1 and " + std::to_string(droppable) +
                                               ", the messages this session may drop" +
                                               (fixed ? " (its system message stays)" : ""))
          .with_limit("drop_last", droppable, *how.drop_last);
    }
    keep = n - *how.drop_last;
  } else {
    if (*how.keep < fixed || *how.keep >= n) {
      return Error(Errc::invalid_argument, "keep must be between " + std::to_string(fixed) + " and " +
                                               std::to_string(n - 1) + ": the session has " +
                                               std::to_string(n) + " messages" +
                                               (fixed ? ", its system message stays," : "") +
                                               " and a rewind drops at least one")
          .with_limit("keep", n - 1, *how.keep);
    }
    keep = *how.keep;
  }
  // Whole turns: the first message dropped opens a turn (a user message); so the kept ones end
  // with the system message or an answer.
  if (msgs[keep].role != "user") {
    const std::uint32_t value = how.drop_last ? *how.drop_last : *how.keep;
    return Error(Errc::invalid_argument, std::string(field) + " = " + std::to_string(value) + " would keep " +
                                             std::to_string(keep) + " messages, leaving message " +
                                             std::to_string(keep) + " (" + msgs[keep].role +
                                             ") without the question it answers: a rewind drops whole turns")
        .with_param(field);
  }
  return keep;
}

}  // namespace

void Service::fork_session(const Caller& caller, const std::string& id, std::function<void(Result<SessionInfo>)> done) {
  if (shutting_down_) return done(stopping());
  if (!visible(caller, id)) return done(no_session(id));
  IndexEntry& src = index_[id];
  if (src.busy) return done(Error(Errc::busy, "session " + id + " is busy with another request"));
  if (sessions_of(caller.uid) >= limits_.max_sessions_per_user) {
    return done(over_limit("uid " + std::to_string(caller.uid) + " has " +
                               std::to_string(limits_.max_sessions_per_user) + " sessions stored already",
                           "max-sessions-per-user", limits_.max_sessions_per_user, sessions_of(caller.uid)));
  }
  // The copy's bytes count at once: a fork may not take a uid past its limit.
  const std::uint64_t bytes = stored_bytes_of(caller.uid);
  if (bytes + src.bytes > limits_.max_stored_bytes_per_user) {
    return done(over_limit("uid " + std::to_string(caller.uid) + "'s sessions hold " + std::to_string(bytes) +
                               " bytes and the fork would add " + std::to_string(src.bytes) + "; delete some first",
                           "max-stored-mib-per-user", limits_.max_stored_bytes_per_user >> 20,
                           (bytes + src.bytes) >> 20));
  }
  if (auto st = check_disk_reserve(); !st) return done(st.error());
  auto new_id = new_session_id();
  if (!new_id) return done(new_id.error());
  kvstore::SessionRecord rec;
  rec.id = std::move(*new_id);
  rec.uid = caller.uid;
  rec.created_ms = rec.updated_ms = unix_ms();
  // Both busy until the copy is stored: no turn changes the source meanwhile, none reaches the fork.
  src.busy = true;
  index_[rec.id] = {caller.uid, true, src.app, src.bytes};
  auto cb = std::make_shared<std::function<void(Result<SessionInfo>)>>(std::move(done));
  auto settle = [this, id, cb, owner = src.uid](const std::string& fork_id, Result<kvstore::SessionRecord> stored) {
    if (auto it = index_.find(id); it != index_.end()) it->second.busy = false;
    if (!stored) {
      index_.erase(fork_id);
      return (*cb)(stored.error().code() == Errc::no_space ? storage_error(stored.error(), "the session was not forked")
                                                             : stored.error());
    }
    // The fork holds references to the original's chunks (no bytes copied), so it keeps its KV
    // when the original goes on or is deleted; for shifted KV (a sliding window) they are its only
    // copy. Never across uids: an admin's fork of another user's session recomputes.
    if (chunks_ && stored->uid == owner) chunks_->share_key(id, fork_id, kvstore::KeyOwner{owner, false});
    IndexEntry& e = index_[fork_id];
    e.busy = false;
    e.app = stored->app;
    e.bytes = stored->n_bytes;
    (*cb)(info_of(*stored, window_config_));
  };
  const bool queued = storage_.post([this, id, rec, settle]() {
    auto stored = store_.fork(id, rec);
    asio::post(io_, [settle, fork_id = rec.id, stored = std::move(stored)]() mutable {
      settle(fork_id, std::move(stored));
    });
  });
  if (!queued) settle(rec.id, stopping());
}

void Service::rewind_session(const Caller& caller, const std::string& id, Rewind how,
                             std::function<void(Result<SessionDetail>)> done) {
  if (shutting_down_) return done(stopping());
  if (!visible(caller, id)) return done(no_session(id));
  IndexEntry& e = index_[id];
  if (e.busy) return done(Error(Errc::busy, "session " + id + " is busy with another request"));
  e.busy = true;
  auto cb = std::make_shared<std::function<void(Result<SessionDetail>)>>(std::move(done));
  struct Cut {
    SessionDetail detail;
    std::uint64_t bytes = 0;
    std::uint32_t tokens = 0;
  };
  auto settle = [this, id, cb](Result<Cut> cut) {
    auto it = index_.find(id);
    if (it == index_.end()) return (*cb)(no_session(id));
    it->second.busy = false;
    if (!cut) return (*cb)(cut.error());
    it->second.bytes = cut->bytes;
    // Nothing past the new end stays: the slot keeps the kept prefix, the chunk store the chunks
    // wholly before it (the one the cut goes through holds other tokens now).
    worker_.cut_session(id, cut->tokens);
    if (chunks_) chunks_->drop_from(id, cut->tokens / chunks_->options().chunk_tokens);
    // (The engine applies the cut after this: a cut to nothing leaves no KV in the slot, any other
    // keeps the slot's prefix.)
    for (const auto& s : worker_.stats().slots) {
      cut->detail.info.resident = cut->detail.info.resident || (s.session_id == id && cut->tokens > 0);
    }
    if (chunks_) cut->detail.info.kv = chunks_->residency(id);
    if (cut->detail.info.window.overflow_default) cut->detail.info.window.overflow = window_config_.overflow;
    (*cb)(std::move(cut->detail));
  };
  const bool queued = storage_.post([this, id, how, settle]() {
    auto cut = [&]() -> Result<Cut> {
      auto rec = store_.get(id);
      if (!rec) return rec.error();
      auto msgs = store_.messages(id);
      if (!msgs) return msgs.error();
      auto keep = messages_kept(how, *msgs);
      if (!keep) return keep.error();
      // Where the kept turns' tokens end: the last kept answer's token_end (schema 2), else found
      // by re-deriving the turns' prompts (turn_boundary). A system prompt alone keeps no tokens:
      // the first turn renders it with the first message, as it did the first time. Tokens of
      // another model are re-derived by the next turn anyway; an end that cannot be known (a
      // window that began later, tokens whose turns cannot be found) keeps none, and the next
      // turn renders the kept messages afresh.
      std::size_t keep_tokens = 0;
      const kvstore::MessageRecord* last = *keep > 0 ? &(*msgs)[*keep - 1] : nullptr;
      if (last && last->role == "assistant" && rec->model_id == model_.info().fingerprint) {
        if (last->token_end && last->seq >= rec->window_first_message && *last->token_end <= rec->n_tokens) {
          keep_tokens = *last->token_end;
        } else if (rec->window_first_message == 0 && !rec->tools) {
          // (A session with tools renders them into every turn: its turns are not re-derived here.)
          auto toks = store_.tokens(id);
          if (toks) keep_tokens = turn_boundary(model_, tok_, chat_of(*msgs), *toks, *keep).value_or(0);
        }
      }
      auto stored = store_.rewind(id, static_cast<std::uint32_t>(*keep), static_cast<std::uint32_t>(keep_tokens),
                                  unix_ms());
      if (!stored) return stored.error();
      msgs->resize(*keep);
      Cut c;
      c.bytes = stored->n_bytes;
      c.tokens = stored->n_tokens;
      c.detail = SessionDetail{info_of(*stored, WindowConfig{}), std::move(*msgs)};
      return c;
    }();
    asio::post(io_, [settle, cut = std::move(cut)]() mutable { settle(std::move(cut)); });
  });
  if (!queued) settle(stopping());
}

}  // namespace llmd::core
