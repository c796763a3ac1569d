// Durable sessions: their metadata, messages and token sequence in SQLite (WAL) in the state
// directory. The token sequence is a session's durable truth (its KV cache is only a cache of it);
// the messages are what produced it, kept so that a model change can rebuild the tokens.
//
// Every write is one transaction with synchronous=FULL: once a call returns, the change survives a
// crash of the process or of the machine, and a crash mid-call leaves the previous state.
//
// Thread-safety: one thread at a time (in the daemon: the storage worker).
#pragma once

#include <cstdint>
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
};

struct MessageRecord {
  std::string role;  // "system", "user", "assistant"
  std::string content;
  std::int64_t created_ms = 0;
};

class SessionStore {
 public:
  // Opens or creates `path` (errors: the file is not a database, a newer schema, I/O).
  static Result<std::unique_ptr<SessionStore>> open(const std::string& path);

  // Creates a session with its first messages (the system prompt, if any) and tokens.
  // invalid_argument if the id exists.
  Status create(const SessionRecord& session, std::span<const MessageRecord> messages,
                std::span<const std::int32_t> tokens);

  // All sessions, or those of one uid, oldest first.
  Result<std::vector<SessionRecord>> list(std::optional<std::uint32_t> uid = std::nullopt);
  Result<SessionRecord> get(const std::string& id);  // not_found
  Result<std::vector<MessageRecord>> messages(const std::string& id);
  Result<std::vector<std::int32_t>> tokens(const std::string& id);

  // Appends a completed turn atomically: messages and tokens. expected_n_tokens is the token count
  // the caller built on; if the stored count differs the turn is refused (invalid_argument) and
  // nothing changes.
  Status append_turn(const std::string& id, std::span<const MessageRecord> messages,
                     std::span<const std::int32_t> new_tokens, std::uint32_t expected_n_tokens,
                     std::int64_t now_ms);

  // Replaces the token sequence (after a model change re-tokenised the messages).
  Status replace_tokens(const std::string& id, std::span<const std::int32_t> tokens, const std::string& model_id);

  Status remove(const std::string& id);  // not_found

 private:
  explicit SessionStore(std::unique_ptr<Db> db) : db_(std::move(db)) {}
  Status migrate();

  std::unique_ptr<Db> db_;
};

}  // namespace llmd::kvstore
