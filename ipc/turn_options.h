// The generation options every front end takes (and those of a rewind, below), under the same names and with the same checks:
// the fields of a generating HTTP request and the options of the D-Bus Generate call.
//
//   max_tokens (default: default-max-tokens), temperature, top_p, top_k, min_p, seed, stop,
//   repeat_penalty, ignore_eos (see read_generate_params), priority ("interactive" | "background"),
//   app (a client name; Service::start_turn checks it; a session turn uses the session's),
//   overflow ("error" | "drop_oldest"; "sliding" is refused for a stateless request: what one that does not fit
//   the context does; core/context_window.h; Service::start_turn says who may set it).
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "core/service.h"

namespace llmd::ipc {

// Reads the options in `fields` (a JSON object; absent or null fields keep their defaults) into
// `turn`'s params, priority and app. invalid_argument naming the field for a wrong type or value.
Status read_turn_options(const nlohmann::json& fields, const core::ServiceLimits& limits,
                         std::uint32_t max_session_tokens, core::TurnRequest& turn);

// The options of a rewind, under the same names on every front end: drop_last (drop the last N
// messages) or keep (keep the first K), exactly one, each an integer 1..2^32-1 (keep may be 0).
// invalid_argument naming the field: an unknown one (on D-Bus, an unknown option), both or
// neither, a wrong type or range. The Service checks them against the session.
Result<core::Service::Rewind> read_rewind(const nlohmann::json& fields);

}  // namespace llmd::ipc
