// Fuzz target: the configuration file parser and its validation (daemon/config.h, and the settings
// table of daemon/settings.h that both read: its per-key parsers, checks and formatting).
//
// The input is a config file. It is written to a memory file (memfd; a file on disk costs
// milliseconds per input in writeback) and read by parse_args exactly as `llmd --config FILE`
// reads it, through its /proc/self/fd path, twice: once alone (the model must come from the file) and once
// with --model on the command line (so validation of every other key is reached). Properties:
// parse_args returns an error (invalid_argument) rather than throwing; a configuration it accepts
// is valid (validate), and what --check-config prints for it (describe, which quotes a value the
// file's reader would otherwise change) is itself a config file that parses to the same description.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "daemon/config.h"
#include "fuzz/fuzz_util.h"

namespace {

using namespace llmd;
// Two memory files: the input, and what describe() wrote.
int input_fd = -1, described_fd = -1;

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

void write(int fd, const char* data, std::size_t size) {
  FUZZ_CHECK(::ftruncate(fd, 0) == 0, "cannot truncate a memory file");
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0, "cannot write a memory file");
    done += static_cast<std::size_t>(n);
  }
}

Result<daemon::ParsedArgs> parse(int fd, bool with_model) {
  const std::string path = fd_path(fd);
  if (with_model) {
    const char* argv[] = {"llmd", "--config", path.c_str(), "--model", "/fuzz/model.gguf"};
    return daemon::parse_args(5, argv);
  }
  const char* argv[] = {"llmd", "--config", path.c_str()};
  return daemon::parse_args(3, argv);
}

void check(const std::uint8_t* data, std::size_t size, bool with_model) {
  write(input_fd, reinterpret_cast<const char*>(data), size);
  const auto parsed = parse(input_fd, with_model);
  if (!parsed) {
    FUZZ_CHECK(parsed.error().code() == Errc::invalid_argument,
               "a config file was refused with another code: " + parsed.error().to_string());
    FUZZ_CHECK(!parsed.error().message().empty(), "a config file was refused without a message");
    return;
  }
  FUZZ_CHECK(parsed->action == daemon::Action::run, "a config file changed the action");
  const auto& c = parsed->config;
  FUZZ_CHECK(daemon::validate(c).ok(), "parse_args accepted a configuration validate refuses");
  // --check-config's output is a config file for the same settings.
  const std::string described = daemon::describe(c);
  write(described_fd, described.data(), described.size());
  const auto again = parse(described_fd, false);
  FUZZ_CHECK(again, "describe() wrote a config file that does not parse: " + again.error().to_string() + "\n" + described);
  FUZZ_CHECK(daemon::describe(again->config) == described,
             "describe() -> parse -> describe() changed the settings:\n" + described + "---\n" +
                 daemon::describe(again->config));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // No LLMD_MODEL from the environment may leak into the run.
  ::unsetenv("LLMD_MODEL");
  input_fd = ::memfd_create("llmd.conf", MFD_CLOEXEC);
  described_fd = ::memfd_create("described.conf", MFD_CLOEXEC);
  FUZZ_CHECK(input_fd >= 0 && described_fd >= 0, "memfd_create failed");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check(data, size, false);
  check(data, size, true);
  return 0;
}
