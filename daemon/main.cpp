// llmd: the system LLM service. Parses the configuration and hands over to App (daemon/app.h).
// Exit codes: 0 clean stop, 1 failure while running or starting, 2 bad command line or config.
#include <cstdio>
#include <string>
#include <vector>

#include "daemon/app.h"
#include "daemon/config.h"
#include "engine/backend.h"
#include "engine/gguf_probe.h"
#include "daemon/logging.h"
#include "daemon/settings.h"
#include "daemon/state_dir.h"

int main(int argc, char** argv) {
  using namespace llmd::daemon;
  auto parsed = parse_args(argc, argv);
  if (!parsed) {
    std::fprintf(stderr, "llmd: %s\n", parsed.error().message().c_str());
    return 2;
  }
  switch (parsed->action) {
    case Action::help:
      std::fputs(parsed->help.c_str(), stdout);
      return 0;
    case Action::version:
      std::printf("llmd %s (llama.cpp %s)\n", kVersion, llmd::engine::llama_version_string().c_str());
      return 0;
    case Action::check_config: {
      std::fputs(describe(parsed->config).c_str(), stdout);
      auto probe = llmd::engine::probe_gguf(parsed->config.model);
      if (!probe) {
        std::fprintf(stderr, "llmd: %s\n", probe.error().message().c_str());
        return 1;
      }
      std::printf("# configuration OK (model: %s, architecture %s)\n", parsed->config.model.c_str(),
                  probe->architecture.c_str());
      return 0;
    }
    case Action::run:
      break;
  }
  setup_logging(stderr_is_journal());
  if (auto st = set_log_level(std::string(name_of(parsed->config.log_level))); !st) {
    std::fprintf(stderr, "llmd: %s\n", st.error().message().c_str());
    return 2;
  }
  // Conversations: nothing llmd creates is for other users (the socket is made 0666 explicitly).
  restrict_umask();
  App app(parsed->config, std::vector<std::string>(argv, argv + argc));
  return app.run();
}
