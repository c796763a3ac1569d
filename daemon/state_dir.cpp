// The state directory's permissions (see state_dir.h).
#include "daemon/state_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace llmd::daemon {
namespace {

namespace fs = std::filesystem;

std::string octal(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// Takes `remove` away from path's mode (a regular file or a directory; symbolic links and
// anything else are left alone: chmod would follow a link out of the state directory).
void tighten(const std::string& path, mode_t remove, StateDirReport& report) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return;
  const mode_t mode = st.st_mode & 07777;
  if ((mode & remove) == 0) return;
  const mode_t want = mode & ~remove;
  if (::chmod(path.c_str(), want) != 0) {
    report.warnings.push_back(path + " is " + octal(mode) + " and cannot be made " + octal(want) + ": " +
                              std::strerror(errno));
    return;
  }
  report.tightened.push_back(path + ": " + octal(mode) + " -> " + octal(want));
}

// Files llmd keeps in the state directory, besides kv/: the session database and whatever SQLite
// and the salvage put beside it.
bool is_session_file(const std::string& name) { return name.rfind("sessions.db", 0) == 0; }

}  // namespace

Result<StateDirReport> prepare_state_dir(const std::string& dir) {
  StateDirReport report;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return errno_error(errno, "the state directory " + dir);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return errno_error(ec.value(), "creating the state directory " + dir);
    if (::chmod(dir.c_str(), 0750) != 0) return errno_error(errno, "chmod 0750 " + dir);
    report.created = true;
    return report;
  }
  if (!S_ISDIR(st.st_mode)) return Error(Errc::invalid_argument, "the state directory " + dir + " is not a directory");

  const mode_t mode = st.st_mode & 07777;
  if (st.st_mode & S_ISVTX) {
    // A shared directory (/tmp-like): not llmd's to change.
    if (mode & S_IRWXO) {
      report.warnings.push_back("the state directory " + dir + " is a shared directory (" + octal(mode) +
                                "); it is left as it is, the files llmd keeps in it are private");
    }
  } else if (st.st_uid == ::geteuid()) {
    tighten(dir, S_IWGRP | S_IRWXO, report);
  } else if (mode & S_IRWXO) {
    report.warnings.push_back("the state directory " + dir + " is " + octal(mode) + " and belongs to uid " +
                              std::to_string(st.st_uid) + ", not to llmd's user: others can list it; the files " +
                              "llmd keeps in it are private");
  }

  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (is_session_file(name)) tighten(it->path().string(), S_IRWXG | S_IRWXO, report);
  }
  if (ec) return errno_error(ec.value(), "listing the state directory " + dir);

  const std::string kv = dir + "/kv";
  if (::lstat(kv.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    tighten(kv, S_IRWXG | S_IRWXO, report);
    for (fs::recursive_directory_iterator it(kv, fs::directory_options::skip_permission_denied, ec), end;
         !ec && it != end; it.increment(ec)) {
      tighten(it->path().string(), S_IRWXG | S_IRWXO, report);
    }
    if (ec) report.warnings.push_back("listing " + kv + ": " + ec.message());
  }
  return report;
}

Status prepare_socket_dir(const std::string& socket_path) {
  std::vector<fs::path> missing;
  for (fs::path p = fs::path(socket_path).parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) break;
    missing.push_back(p);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0755) != 0 && errno != EEXIST) return errno_error(errno, "creating " + it->string());
    if (::chmod(it->c_str(), 0755) != 0) return errno_error(errno, "chmod 0755 " + it->string());
  }
  return {};
}

void restrict_umask() {
  const mode_t inherited = ::umask(0077);
  ::umask(inherited | 0077);
}

}  // namespace llmd::daemon
