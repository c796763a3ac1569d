// llama.cpp backend initialisation and log routing (see backend.h).
#include "engine/backend.h"

#include <llama.h>

#include "common/mutex.h"

namespace llmd::engine {
namespace {

Mutex g_sink_mutex;
LogSink g_sink LLMD_GUARDED_BY(g_sink_mutex);

// llama.cpp logs a message in pieces (continuation lines have level CONT); lines are assembled per
// thread so that concurrent contexts do not interleave.
thread_local std::string t_line;
thread_local LogLevel t_line_level = LogLevel::info;
thread_local std::string t_errors;

constexpr size_t kMaxErrorText = 4096;

LogLevel map_level(ggml_log_level level) {
  switch (level) {
    case GGML_LOG_LEVEL_DEBUG: return LogLevel::debug;
    case GGML_LOG_LEVEL_WARN: return LogLevel::warn;
    case GGML_LOG_LEVEL_ERROR: return LogLevel::error;
    default: return LogLevel::info;
  }
}

void emit_line() {
  while (!t_line.empty() && (t_line.back() == '\n' || t_line.back() == ' ')) t_line.pop_back();
  if (t_line.empty()) return;
  if (t_line_level == LogLevel::error || t_line_level == LogLevel::warn) {
    if (t_errors.size() < kMaxErrorText) {
      if (!t_errors.empty()) t_errors += "; ";
      t_errors += t_line;
    }
  }
  {
    MutexLock lock(g_sink_mutex);
    if (g_sink) g_sink(t_line_level, t_line);
  }
  t_line.clear();
}

void log_callback(ggml_log_level level, const char* text, void* /*user*/) {
  if (text == nullptr) return;
  if (level != GGML_LOG_LEVEL_CONT) {
    if (!t_line.empty()) emit_line();
    t_line_level = map_level(level);
  }
  t_line += text;
  if (!t_line.empty() && t_line.back() == '\n') emit_line();
}

}  // namespace

void ensure_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(log_callback, nullptr);
    llama_backend_init();
  });
}

void set_log_sink(LogSink sink) {
  ensure_backend();
  MutexLock lock(g_sink_mutex);
  g_sink = std::move(sink);
}

void clear_llama_errors() { t_errors.clear(); }

std::string take_llama_errors() {
  if (!t_line.empty()) emit_line();
  std::string s = std::move(t_errors);
  t_errors.clear();
  return s;
}

std::string llama_version_string() {
  return std::string(llama_version());
}

}  // namespace llmd::engine
