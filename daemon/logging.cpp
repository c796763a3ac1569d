// spdlog set-up (see logging.h).
#include "daemon/logging.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <spdlog/spdlog.h>

#include "engine/backend.h"

namespace llmd::daemon {

bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (js == nullptr) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

void setup_logging(bool to_journal) {
  std::shared_ptr<spdlog::logger> logger;
  if (to_journal) {
    logger = std::make_shared<spdlog::logger>("llmd", std::make_shared<spdlog::sinks::systemd_sink_mt>("llmd"));
    logger->set_pattern("%v");  // the journal keeps time, level and unit itself
  } else {
    logger = std::make_shared<spdlog::logger>("llmd", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  }
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  engine::set_log_sink([](engine::LogLevel level, std::string_view text) {
    // The shared KV pool may exceed the training context; llmd caps each session at it
    // (Context::max_seq_len), so llama.cpp's warning about it is not news.
    if (text.find("possible training context overflow") != std::string_view::npos) level = engine::LogLevel::debug;
    // A full KV pool is an event the engine handles (it drops an idle slot's KV or parks a job
    // until cells are free, and says so itself): llama.cpp's own lines about it are not warnings.
    if (text.find("failed to find a memory slot") != std::string_view::npos ||
        text.find("available cells in kv cache") != std::string_view::npos) {
      level = engine::LogLevel::debug;
    }
    switch (level) {
      case engine::LogLevel::error: spdlog::error("llama.cpp: {}", text); break;
      case engine::LogLevel::warn: spdlog::warn("llama.cpp: {}", text); break;
      default: spdlog::debug("llama.cpp: {}", text); break;
    }
  });
}

Status set_log_level(const std::string& level) {
  const auto l = spdlog::level::from_str(level);
  if (l == spdlog::level::off && level != "off") return Error(Errc::invalid_argument, "unknown log level " + level);
  spdlog::set_level(l);
  return {};
}

}  // namespace llmd::daemon
