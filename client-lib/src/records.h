// llmd's JSON answers about sessions and its status, as the C structs of llmclient.h: each one
// block (c_block.h). Missing fields read as empty or 0 (an older or newer llmd); an answer that is
// not the expected JSON at all is a protocol error.
#pragma once

#include <string>

#include "client-lib/src/failure.h"
#include "llmclient/llmclient.h"

namespace llmc::detail {

Failure session_id_from(const std::string& body, char** out);
Failure session_list_from(const std::string& body, llmc_sessions** out);
Failure session_detail_from(const std::string& body, llmc_session_detail** out);
Failure daemon_status_from(const std::string& body, llmc_daemon_status** out);

}  // namespace llmc::detail
