// The default socket path (see socket_path.h).
#include "client-lib/src/socket_path.h"

#include <sys/stat.h>

#include <cstdlib>

namespace llmd::client {
namespace {

bool is_socket(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

std::string default_socket_path() {
  if (const char* e = std::getenv("LLMD_SOCKET"); e != nullptr && *e != '\0') return e;
  const std::string system_path = "/run/llmd/llmd.sock";
  if (is_socket(system_path)) return system_path;
  if (const char* rt = std::getenv("XDG_RUNTIME_DIR"); rt != nullptr && *rt != '\0') {
    const std::string user_path = std::string(rt) + "/llmd/llmd.sock";
    if (is_socket(user_path)) return user_path;
  }
  return system_path;
}

}  // namespace llmd::client
