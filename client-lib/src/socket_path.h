// Where llmd's socket is, by the rule every client shares (llmctl, libllmclient, the tests).
#pragma once

#include <string>

namespace llmd::client {

// $LLMD_SOCKET; else /run/llmd/llmd.sock if it exists; else $XDG_RUNTIME_DIR/llmd/llmd.sock if it
// exists; else /run/llmd/llmd.sock.
std::string default_socket_path();

}  // namespace llmd::client
