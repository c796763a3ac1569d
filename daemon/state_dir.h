// The state directory's permissions. Sessions hold users' conversations, so nothing llmd keeps
// there may be readable by other users, whoever created the directory and whatever umask llmd was
// started with:
//
// - llmd runs with a umask of at least 0077 (main.cpp): every file it creates is 0600 at most,
//   every directory 0700 at most. (SQLite gives a database's -wal and -shm the database file's
//   own mode, whatever the umask: that is why existing files are fixed before SQLite opens them.)
// - prepare_state_dir, at start-up, before any database is opened: creates the directory 0750
//   when it is missing; when it exists and belongs to llmd's user, takes away group write and
//   every permission of others (0755 -> 0750), as systemd's StateDirectoryMode=0750 has it; and
//   makes llmd's own files in it owner-only: sessions.db and its companions (-wal, -shm,
//   -journal, kept-aside damaged copies) and the kv/ tree. Files llmd does not know are left
//   alone: a state directory may be shared with other things.
//
// The socket is not in the state directory; it stays 0666 (ipc/http_server.h).
#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace llmd::daemon {

struct StateDirReport {
  bool created = false;
  std::vector<std::string> tightened;  // "PATH: 0644 -> 0600", one per path whose mode changed
  std::vector<std::string> warnings;   // what could not be made private, and why
};

// See the file comment. Errors: the directory cannot be created, or is not a directory.
Result<StateDirReport> prepare_state_dir(const std::string& dir);

// Creates the socket's directory (and its missing parents) 0755 — the umask would make them
// 0700 and lock other users out of the socket. Existing directories are left as they are.
Status prepare_socket_dir(const std::string& socket_path);

// The umask llmd runs with: the inherited one with group and others' permissions added (at least
// 0077). Called once at the start of main.
void restrict_umask();

}  // namespace llmd::daemon
