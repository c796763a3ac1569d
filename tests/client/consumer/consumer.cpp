// A program built against an installed libllmclient with find_package(llmclient), using the C++
// wrapper. It checks what needs no daemon: the version, and the exception when llmd is not running.
#include <cstring>
#include <iostream>

#include <llmclient/llmclient.hpp>

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(llmc_version(), argv[1]) != 0) {
    std::cerr << "version " << llmc_version() << ", expected " << (argc > 1 ? argv[1] : "?") << "\n";
    return 1;
  }
  try {
    llmc::Client llmd("/nonexistent/llmd.sock");
  } catch (const llmc::Error& e) {
    if (e.code() != LLMC_ERR_UNAVAILABLE) return 2;
    std::cout << "libllmclient " << llmc_version() << ": " << e.what() << "\n";
    return 0;
  }
  return 3;
}
