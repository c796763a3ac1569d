// Exported: clients, errors, the event-loop entry points (see llmclient.h).
#include <sys/un.h>

#include <climits>
#include <cstdlib>
#include <system_error>

#include "client-lib/src/socket_path.h"
#include "client-lib/src/api_util.h"
#include "client-lib/src/exchange.h"

using llmc::detail::check_can_block;
using llmc::detail::entry;
using llmc::detail::Failure;
using llmc::detail::failure;
using llmc::detail::no_client;

namespace llmc::detail {

Failure& thread_last_error() {
  thread_local Failure last;
  return last;
}

void destroy_client(llmc_client* c) noexcept {
  c->core.shutdown();
  delete c;
}

}  // namespace llmc::detail

extern "C" {

const char* llmc_version(void) { return LLMC_VERSION_STRING; }

void llmc_free(void* ptr) { std::free(ptr); }

const char* llmc_last_error(const llmc_client* c) {
  return (c != nullptr ? c->core.last_error : llmc::detail::thread_last_error()).message.c_str();
}

void llmc_last_error_info(const llmc_client* c, llmc_error_info* out) {
  if (out == nullptr) return;
  const Failure& f = c != nullptr ? c->core.last_error : llmc::detail::thread_last_error();
  out->code = f.code;
  out->http_status = f.http_status;
  out->message = f.message.c_str();
  out->param = f.param.c_str();
  out->retry_after_s = f.retry_after_s;
}

llmc_code llmc_connect(const char* socket_path, llmc_client** out) {
  return entry(nullptr, [&]() -> Failure {
    if (out == nullptr) return failure(LLMC_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = nullptr;
    std::string path = socket_path != nullptr ? std::string(socket_path) : llmd::client::default_socket_path();
    if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
      return failure(LLMC_ERR_INVALID_ARGUMENT, "not a Unix socket path (1 to " +
                                                    std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                                                    " bytes): " + path.substr(0, 200));
    }
    if (const int err = llmc::detail::probe_socket(path); err != 0) {
      return llmc::detail::from_connect_errno(err, path);
    }
    try {
      *out = new llmc_client(std::move(path));
    } catch (const std::system_error& e) {
      return llmc::detail::from_errno(e.code().value(), "creating the client");
    }
    return {};
  });
}

void llmc_close(llmc_client* c) {
  if (c == nullptr) return;
  if (c->core.in_callback()) {
    c->core.request_close();  // freed by the call that ran the callback
    return;
  }
  llmc::detail::destroy_client(c);
}

const char* llmc_socket_path(const llmc_client* c) { return c != nullptr ? c->core.path().c_str() : ""; }

llmc_code llmc_set_timeout(llmc_client* c, long ms) {
  return entry(c, [&]() -> Failure {
    if (c == nullptr) return no_client();
    if (ms < 1 || ms > INT_MAX) return failure(LLMC_ERR_INVALID_ARGUMENT, "the timeout must be 1 to 2^31-1 ms");
    c->core.set_idle_timeout(std::chrono::milliseconds(ms));
    return {};
  });
}

void llmc_interrupt(llmc_client* c) {
  if (c != nullptr) c->core.interrupt();
}

void llmc_interrupt_clear(llmc_client* c) {
  if (c != nullptr) c->core.clear_interrupt();
}

int llmc_fd(const llmc_client* c) { return c != nullptr ? c->core.fd() : -1; }

long llmc_timeout_ms(const llmc_client* c) { return c != nullptr ? c->core.timeout_ms() : -1; }

size_t llmc_pending(const llmc_client* c) { return c != nullptr ? c->core.pending() : 0; }

llmc_code llmc_process(llmc_client* c) {
  return entry(c, [&]() -> Failure {
    if (auto f = check_can_block(c)) return f;
    c->core.process();
    return {};
  });
}

llmc_code llmc_wait(llmc_client* c, long timeout_ms) {
  return entry(c, [&]() -> Failure {
    if (auto f = check_can_block(c)) return f;
    return c->core.wait(timeout_ms);
  });
}

llmc_code llmc_set_loop_hooks(llmc_client* c, const llmc_loop_hooks* hooks) {
  return entry(c, [&]() -> Failure {
    if (c == nullptr) return no_client();
    c->core.set_hooks(hooks);
    return {};
  });
}

}  // extern "C"
