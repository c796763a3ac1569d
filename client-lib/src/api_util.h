// What every exported function shares: recording the last error, turning exceptions into codes (no
// exception crosses the C ABI), and freeing a client that a callback closed.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "client-lib/src/core.h"
#include "client-lib/src/failure.h"

namespace llmc::detail {

// The last failure of calls without a client (llmc_connect), per thread.
Failure& thread_last_error();

// Records `f` as the last error of `c` (or of the thread, c == NULL); returns its code.
inline llmc_code report(llmc_client* c, Failure f) {
  const llmc_code code = f.code;
  (c != nullptr ? c->core.last_error : thread_last_error()) = std::move(f);
  return code;
}

// Cancels everything, detaches the loop and frees the client.
void destroy_client(llmc_client* c) noexcept;

// Runs an exported function's body: exceptions become codes; a client closed by a callback the
// body ran is freed here, at the end of the outermost call (see llmc_close).
template <typename F>
llmc_code entry(llmc_client* c, F&& body) noexcept {
  Failure f;
  try {
    f = body();
  } catch (const std::bad_alloc&) {
    f.code = LLMC_ERR_NOMEM;
  } catch (const std::exception& e) {
    f.code = LLMC_ERR_PROTOCOL;
    try {
      f.message = std::string("unexpected answer from llmd: ") + e.what();
    } catch (...) {
    }
  } catch (...) {
    f.code = LLMC_ERR_PROTOCOL;
  }
  if (f.code == LLMC_ERR_NOMEM && f.message.empty()) f.message = "out of memory";  // fits in place
  if (c != nullptr && c->core.close_requested() && !c->core.in_callback()) {
    destroy_client(c);
    return f.code;
  }
  if (f) return report(c, std::move(f));
  return LLMC_OK;
}

// The refusals shared by the calls that wait.
inline Failure no_client() { return failure(LLMC_ERR_INVALID_ARGUMENT, "client is NULL"); }
inline Failure check_can_block(const llmc_client* c) {
  if (c == nullptr) return no_client();
  if (c->core.in_callback()) {
    return failure(LLMC_ERR_INVALID_ARGUMENT,
                   "a call that waits (blocking call, llmc_process, llmc_wait) from inside a callback of the same "
                   "client");
  }
  return {};
}

}  // namespace llmc::detail
