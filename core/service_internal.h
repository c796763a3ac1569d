// What the Service's files share (service.cpp: turns, the drain and status; service_sessions.cpp:
// session calls and audits; service_rules.cpp: the rules front ends and the config share).
// Internal to core/: no other folder includes it.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "core/service.h"

namespace llmd::core::detail {

std::vector<engine::ChatMessage> chat_of(const std::vector<kvstore::MessageRecord>& records);
// The session's info; its window's policy is `config`'s where the session chose none.
SessionInfo info_of(const kvstore::SessionRecord& r, const WindowConfig& config);
inline Error no_session(const std::string& id) { return Error(Errc::not_found, "no session " + id); }
// What a request gets once the storage thread has stopped (after the shutdown drain): the same
// answer as one refused at the door (HTTP 503, D-Bus Unavailable), never silence.
inline Error stopping() { return Error(Errc::unavailable, "the daemon is shutting down"); }
// A session holds tokens once a turn has run: its messages then go beyond the system prompt.
bool has_turns(const std::vector<engine::ChatMessage>& chat);
std::string mib(std::uint64_t bytes);

}  // namespace llmd::core::detail
