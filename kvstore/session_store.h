// Durable sessions: their metadata, messages and token sequence in SQLite (WAL) in the state
// directory. The token sequence is a session's durable truth (its KV cache is only a cache of it);
// the messages are what produced it, kept so that a model change can rebuild the tokens.
//
// Every write is one transaction with synchronous=FULL: once a call returns, the change survives a
// crash of the process or of the machine, and a crash mid-call leaves the previous state.
//
// Schema 2 (PRAGMA user_version = 2; a schema-1 file is migrated in place when opened) adds what
// lets a session outlive its context: per message the offset where its tokens end in the token
// sequence (`token_end`), per session its overflow policy and the model's window over the
// transcript (`window_first_message`, `dropped_tokens`). The transcript is never shortened: a
// window move rewrites the token sequence, not the messages.
//
// Thread-safety: one thread at a time (in the daemon: the storage worker).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "kvstore/sqlite_db.h"

namespace llmd::kvstore {

struct SessionRecord {
  std::string id;
  std::uint32_t uid = 0;       // owner
  std::string app;             // optional name the client declared
  std::optional<std::string> system_prompt;
  std::int64_t created_ms = 0;  // Unix time, milliseconds
  std::int64_t updated_ms = 0;
  std::string model_id;         // fingerprint of the model the tokens were made with
  std::uint32_t n_tokens = 0;
  std::uint32_t n_messages = 0;
  std::uint64_t n_bytes = 0;  // stored: messages' text + 4 bytes per token
  // The session's context overflow policy ("error", "drop_oldest", "sliding"); nullopt: the
  // daemon's default (context-overflow) at each turn. The store keeps the text as given.
  std::optional<std::string> overflow;
  // The model's window over the transcript: the messages whose tokens the token sequence holds
  // are the system messages and those with seq >= window_first_message (0: every message).
  std::int64_t window_first_message = 0;
  std::uint64_t dropped_tokens = 0;  // tokens dropped from the window over the session's life
  std::uint32_t n_dropped_messages = 0;  // read only: messages outside the window (not system, seq < first)
  // What the session's KV is (the chunk store's lineage, chunk_store.h KeyOwner): 0, the KV a
  // prefill of its tokens gives; otherwise the lineage a "sliding" window move started (positions
  // shifted in the KV: not what a prefill gives), committed with that turn and kept by a fork.
  std::uint64_t kv_lineage = 0;
  // The tools the session's prompt describes (a JSON array in OpenAI's "tools" shape, as the
  // Service canonicalised it); nullopt: none. Its tokens were rendered with exactly these.
  std::optional<std::string> tools;
};

struct MessageRecord {
  std::string role;  // "system", "user", "assistant", "tool" (a tool's result)
  std::string content;
  std::int64_t created_ms = 0;
  // Where this message's tokens end in the session's token sequence (an offset: the tokens before
  // it). A user message ends after the prompt tokens its turn added (the template's opening of the
  // answer included), an assistant message after its generated tokens, the system prompt after the
  // template's rendering of it (known once the first turn ran). nullopt ("NULL") means unknown: a
  // row migrated from schema 1, a system prompt before the first turn, a message outside the
  // window (dropped), or a split the template did not allow. Whoever needs a boundary that is
  // unknown re-derives the tokens from the messages (core/context_window.h), never guesses.
  std::optional<std::uint32_t> token_end = std::nullopt;
  std::int64_t seq = -1;  // its number in the session (messages() sets it; writes number messages themselves)
};

// A change of a session's window, committed with a turn (SessionStore::append_turn) so that a
// turn that is not saved leaves the window as it was.
struct WindowChange {
  // The sequence the turn builds on, replacing the stored one (a window move); nullopt: kept.
  std::optional<std::vector<std::int32_t>> tokens;
  std::optional<std::int64_t> first_message;  // the new window_first_message
  std::uint64_t dropped_tokens = 0;           // added to the session's total
  // New token_end values, by message seq (nullopt: NULL). When `tokens` is set, every message
  // before first_message that is not a system message gets NULL (it left the window) and every
  // other one not named here keeps its value.
  std::map<std::int64_t, std::optional<std::uint32_t>> token_ends;
  std::optional<std::uint64_t> kv_lineage;  // the session's new KV lineage (a sliding move); nullopt: kept
  // The session's new tools (SessionRecord::tools; "" clears them); nullopt: kept. Set with
  // `tokens` re-rendered for them: the sequence and the tools it describes change together.
  std::optional<std::string> tools;
};

// What SessionStore::open_or_salvage found and did. Nothing is set when the database was sound.
struct SalvageReport {
  std::string problem;                  // why the database was judged damaged ("" when it was not)
  std::vector<std::string> kept_aside;  // the damaged files under their new names (never deleted)
  bool nothing_readable = false;        // not even the schema could be read: the new store is empty
  std::size_t sessions_salvaged = 0;
  std::size_t messages_salvaged = 0;
  // Sessions that were not salvaged: their record (and with it their owner) could not be read.
  // Named by id where an index or a message still names them.
  std::vector<std::string> sessions_lost;
  std::size_t sessions_lost_unnamed = 0;  // records a scan found but could not read, id unknown
  std::size_t messages_lost = 0;  // known to have existed (an index, a gap in a session's numbering,
                                  // a lost session's readable messages) and not salvaged
  // Salvaged sessions that lost something: "ID (N messages)", "ID (its system prompt)".
  std::vector<std::string> sessions_damaged;
  // Salvaged sessions whose token sequence could not be read: stored empty under no model, so
  // their next turn re-derives the tokens from the messages.
  std::vector<std::string> tokens_lost;
  bool finished_earlier = false;  // a salvage interrupted after its commit point was installed
};

class SessionStore {
 public:
  // Opens or creates `path` (errors: the file is not a database, a newer schema, I/O). A schema-1
  // file is migrated to schema 2 in place, in one transaction: its sessions get no overflow policy
  // (the default), a window over every message and no dropped tokens; its messages token_end NULL.
  static Result<std::unique_ptr<SessionStore>> open(const std::string& path);

  // Opens `path` like open(), after SQLite's full integrity check (time linear in the file's
  // size). A database SQLite cannot read (corrupt, not a database) or that fails the check does
  // not make this fail: the damaged file (and its -wal) gets a second name,
  // `path.damaged-<UTC time>` (+ `-wal`), never written or deleted; every row that can still be
  // read, session by session and message by message, goes into a new database that replaces
  // `path` atomically; `report` says what was kept aside, salvaged and lost. A session whose
  // record cannot be read is lost with its messages (its owner is unknown). A crash during the
  // salvage leaves either the damaged file in place (the next open salvages again) or the
  // complete salvaged one ready to install (the next open installs it).
  // Errors: those of open(); keeping the damaged files aside or writing the new one failed (the
  // damaged file is then left in place).
  static Result<std::unique_ptr<SessionStore>> open_or_salvage(const std::string& path, SalvageReport& report);

  // Creates a session with its first messages (the system prompt, if any) and tokens, its overflow
  // policy and window (session.overflow, window_first_message, dropped_tokens; messages' token_end
  // as given). invalid_argument if the id exists.
  Status create(const SessionRecord& session, std::span<const MessageRecord> messages,
                std::span<const std::int32_t> tokens);

  // All sessions, or those of one uid, oldest first.
  Result<std::vector<SessionRecord>> list(std::optional<std::uint32_t> uid = std::nullopt);
  Result<SessionRecord> get(const std::string& id);  // not_found
  Result<std::vector<MessageRecord>> messages(const std::string& id);
  Result<std::vector<std::int32_t>> tokens(const std::string& id);

  // Appends a completed turn atomically: messages and tokens. expected_n_tokens is the token count
  // the caller built on; if the stored count differs the turn is refused (invalid_argument) and
  // nothing changes. A message's token_end is stored as given; where the last message has none it
  // gets the new sequence's length (a turn's end is always known).
  Status append_turn(const std::string& id, std::span<const MessageRecord> messages,
                     std::span<const std::int32_t> new_tokens, std::uint32_t expected_n_tokens,
                     std::int64_t now_ms);
  // The same, with a window change applied first in the same transaction: expected_n_tokens is
  // still checked against the stored sequence; new_tokens are then appended to window.tokens
  // (when set). A token_end beyond the resulting sequence is invalid_argument, nothing changed.
  Status append_turn(const std::string& id, std::span<const MessageRecord> messages,
                     std::span<const std::int32_t> new_tokens, std::uint32_t expected_n_tokens,
                     std::int64_t now_ms, const WindowChange& window);

  // Replaces the token sequence (after a model change re-tokenised the messages). Every message's
  // token_end becomes NULL (the window is kept).
  Status replace_tokens(const std::string& id, std::span<const std::int32_t> tokens, const std::string& model_id);
  // The same, with the messages' new token_end values by seq (those not named: NULL).
  Status replace_tokens(const std::string& id, std::span<const std::int32_t> tokens, const std::string& model_id,
                        const std::map<std::int64_t, std::optional<std::uint32_t>>& token_ends);

  Status remove(const std::string& id);  // not_found

  // Copies session `source` as a new session `copy.id` in one transaction: its app, system
  // prompt, model id, token sequence, overflow policy and window, and every message (same seq,
  // roles, texts, times and token_end);
  // owner, created_ms and updated_ms are `copy`'s (its other fields are ignored). Returns the new
  // record as stored. not_found (no source), invalid_argument (copy.id exists).
  Result<SessionRecord> fork(const std::string& source, const SessionRecord& copy);

  // Cuts a session back to its first `keep_messages` messages and first `keep_tokens` tokens in
  // one transaction (the caller computed where the kept messages' tokens end); updated_ms = now_ms.
  // Kept messages' token_end past keep_tokens become NULL; a window that began after the last kept
  // message becomes every message (window_first_message 0); dropped_tokens is kept.
  // Returns the record as stored. not_found; invalid_argument if the session has fewer messages or
  // tokens than it is asked to keep (nothing changes then).
  Result<SessionRecord> rewind(const std::string& id, std::uint32_t keep_messages, std::uint32_t keep_tokens,
                               std::int64_t now_ms);

 private:
  explicit SessionStore(std::unique_ptr<Db> db) : db_(std::move(db)) {}
  Status migrate();

  std::unique_ptr<Db> db_;
};

}  // namespace llmd::kvstore
