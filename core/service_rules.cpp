// The rules the front ends and the config share (service.h): client names, callers, limits
// errors, token damage, session ids; and the helpers the Service's files share (service_internal.h).
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>

#include "core/service.h"
#include "core/service_internal.h"

namespace llmd::core {

namespace detail {

std::vector<engine::ChatMessage> chat_of(const std::vector<kvstore::MessageRecord>& records) {
  std::vector<engine::ChatMessage> out;
  out.reserve(records.size());
  for (const auto& m : records) out.push_back({m.role, m.content});
  return out;
}

SessionInfo info_of(const kvstore::SessionRecord& r, const WindowConfig& config) {
  SessionInfo i;
  i.id = r.id;
  i.uid = r.uid;
  i.app = r.app;
  i.system_prompt = r.system_prompt;
  i.created_ms = r.created_ms;
  i.updated_ms = r.updated_ms;
  i.n_tokens = r.n_tokens;
  i.n_messages = r.n_messages;
  i.window.overflow = config.overflow;
  if (r.overflow) {
    if (auto p = parse_overflow(*r.overflow); p) {
      i.window.overflow = *p;
      i.window.overflow_default = false;
    }
  }
  i.window.first_message = r.window_first_message;
  i.window.dropped_messages = r.n_dropped_messages;
  i.window.dropped_tokens = r.dropped_tokens;
  return i;
}

bool has_turns(const std::vector<engine::ChatMessage>& chat) {
  return std::any_of(chat.begin(), chat.end(), [](const engine::ChatMessage& m) { return m.role != "system"; });
}

std::string mib(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

}  // namespace detail

bool valid_client_name(std::string_view name) {
  // ASCII by value: std::isalnum would follow the C locale, and let a locale's letters through.
  const auto allowed = [](char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
           ch == '-';
  };
  return !name.empty() && name.size() <= kMaxClientName && std::all_of(name.begin(), name.end(), allowed);
}

Status check_app(std::string_view app) {
  if (app.empty() || valid_client_name(app)) return {};
  return Error(Errc::invalid_argument, "app must be 1-64 characters of A-Z a-z 0-9 . _ -").with_param("app");
}

std::string client_of(std::uint32_t uid, std::string_view app) {
  std::string client = std::to_string(uid);
  if (valid_client_name(app)) {
    client += '/';
    client += app;
  }
  return client;
}

Caller caller_from(std::uint32_t uid, std::uint32_t gid, std::int32_t pid, const std::vector<std::uint32_t>& groups,
                   std::optional<std::uint32_t> admin_gid) {
  Caller c;
  c.uid = uid;
  c.gid = gid;
  c.pid = pid;
  c.admin = uid == 0;
  if (admin_gid) {
    const std::uint32_t g = *admin_gid;
    c.admin = c.admin || (gid != kNoGid && gid == g) || std::find(groups.begin(), groups.end(), g) != groups.end();
  }
  return c;
}

Error over_limit(const std::string& what, const std::string& key, std::uint64_t value,
                 std::optional<std::uint64_t> actual) {
  return Error(Errc::resource_exhausted, what + " (limit " + key + " = " + std::to_string(value) + ")")
      .with_limit(key, value, actual);
}

std::string token_damage(std::span<const engine::Token> tokens, std::int32_t n_vocab, std::size_t max_tokens) {
  if (tokens.size() > max_tokens) {
    return std::to_string(tokens.size()) + " tokens, more than a session may hold (" + std::to_string(max_tokens) + ")";
  }
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) {
      return "token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) + " is not in the vocabulary";
    }
  }
  return {};
}

Result<std::string> new_session_id() {
  // 96 bits from the kernel's CSPRNG: ids must not be guessable from ids seen before. getrandom
  // blocks only until the pool is first seeded; it is never replaced by a weaker source.
  std::uint8_t bytes[12];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "reading random bytes for a session id (getrandom)");
    }
    got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "ses_";
  for (const std::uint8_t b : bytes) {
    id += kHex[b >> 4];
    id += kHex[b & 15];
  }
  return id;
}

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace llmd::core
