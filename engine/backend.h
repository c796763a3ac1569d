// Process-wide llama.cpp set-up: backend initialisation and the routing of llama.cpp's own log
// messages. The engine never prints: llama.cpp's messages go to a sink that the daemon installs
// (spdlog) and are otherwise dropped, and the most recent error lines of the calling thread are
// kept so that a failed call can explain itself ("unknown model architecture: 'foo'").
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace llmd::engine {

enum class LogLevel { debug, info, warn, error };

using LogSink = std::function<void(LogLevel, std::string_view)>;

// Initialises the llama.cpp backend once per process; safe to call from any thread, any number of
// times. Every engine entry point calls it, so callers need not.
void ensure_backend();

// Installs the sink for llama.cpp's log lines (nullptr: drop them). Thread-safe. The sink is called
// from whichever thread llama.cpp logs on and must not call back into the engine.
void set_log_sink(LogSink sink);

// Clears / returns the error and warning lines llama.cpp logged on this thread since the last
// clear, joined with "; " (empty if none).
void clear_llama_errors();
std::string take_llama_errors();

// The version string of the llama.cpp the engine is linked with, e.g. "0.5.0 (de3ff81)".
std::string llama_version_string();

}  // namespace llmd::engine
