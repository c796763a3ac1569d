// Logging for the daemon (the only layer that logs): spdlog to the systemd journal when systemd
// started llmd, to stderr otherwise. llama.cpp's own messages are routed here too (its info
// chatter at debug level). Prompt and answer text are never logged unless log-content is on.
#pragma once

#include <string>

#include "common/result.h"

namespace llmd::daemon {

// True if stderr is connected to the journal (JOURNAL_STREAM names it), i.e. systemd started us.
bool stderr_is_journal();

// Sets up the "llmd" logger as the default spdlog logger. Idempotent; safe to call again on reload.
void setup_logging(bool to_journal);
// invalid_argument for an unknown level name.
Status set_log_level(const std::string& level);

}  // namespace llmd::daemon
