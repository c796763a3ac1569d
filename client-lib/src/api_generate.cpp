// Exported: generations, asynchronous and blocking (see llmclient.h).
#include <cstdlib>
#include <memory>

#include "client-lib/src/api_util.h"
#include "client-lib/src/c_block.h"
#include "client-lib/src/generation.h"

using llmc::detail::check_can_block;
using llmc::detail::entry;
using llmc::detail::Failure;
using llmc::detail::failure;
using llmc::detail::format_request;
using llmc::detail::GenHttp;
using llmc::detail::GenRequest;
using llmc::detail::no_client;

extern "C" {

llmc_code llmc_generate_async(llmc_client* c, const char* prompt, const llmc_gen_params* params, llmc_token_fn on_token,
                              llmc_done_fn on_done, void* user, llmc_req_id* id_out) {
  if (id_out != nullptr) *id_out = 0;
  return entry(c, [&]() -> Failure {
    if (c == nullptr) return no_client();
    GenHttp http;
    if (auto f = build_generation(prompt, params, http)) return f;
    auto r = std::make_unique<GenRequest>(http.stream, on_token, on_done, user);
    const llmc_req_id id = c->core.start(std::move(r), format_request("POST", http.target, http.body));
    if (id_out != nullptr) *id_out = id;
    return {};
  });
}

llmc_code llmc_cancel(llmc_client* c, llmc_req_id id) {
  return entry(c, [&]() -> Failure {
    if (c == nullptr) return no_client();
    if (!c->core.cancel(id, failure(LLMC_ERR_CANCELLED, "cancelled"))) {
      return failure(LLMC_ERR_NOT_FOUND, "no request " + std::to_string(id) + " in flight (it finished already)");
    }
    return {};
  });
}

llmc_code llmc_generate(llmc_client* c, const char* prompt, const llmc_gen_params* params, llmc_token_fn on_token,
                        void* user, llmc_result** result_out) {
  if (result_out != nullptr) *result_out = nullptr;
  return entry(c, [&]() -> Failure {
    if (auto f = check_can_block(c)) return f;
    GenHttp http;
    if (auto f = build_generation(prompt, params, http)) return f;
    llmc_result* r = nullptr;
    auto req = std::make_unique<GenRequest>(http.stream, on_token, nullptr, user, &r);
    c->core.run(std::move(req), format_request("POST", http.target, http.body));
    if (r == nullptr) return failure(LLMC_ERR_NOMEM, "out of memory");
    std::unique_ptr<llmc_result, llmc::detail::FreeDeleter> owned(r);
    Failure f{r->code, r->message, r->http_status, r->error_param, r->retry_after_s};
    if (result_out != nullptr) *result_out = owned.release();
    return f;
  });
}

}  // extern "C"
