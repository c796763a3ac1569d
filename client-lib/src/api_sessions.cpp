// Exported: sessions, the daemon's status and raw calls: blocking request/answer exchanges on the
// client core (see llmclient.h).
#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>

#include <nlohmann/json.hpp>

#include "client-lib/src/api_util.h"
#include "client-lib/src/c_block.h"
#include "client-lib/src/records.h"
#include "client-lib/src/text.h"

namespace llmc::detail {
namespace {

// A request whose answer is wanted whole (an event stream as its text: "data: ...\n\n" each).
class CallRequest : public Request {
 public:
  CallRequest(Failure& failure, Answer& answer) : failure_(failure), answer_(answer) {}
  void on_event(const std::string& data) override { events_ += "data: " + data + "\n\n"; }
  void on_finish(Failure failure, Answer& answer) override {
    failure_ = std::move(failure);
    answer_ = std::move(answer);
    if (answer_.event_stream) answer_.body = std::move(events_);
  }

 private:
  Failure& failure_;
  Answer& answer_;
  std::string events_;
};

// Runs one exchange to its end. A failure is either the transport's or llmd's error answer
// (mapped to a code); `answer` holds what llmd said either way.
Failure call(llmc_client* c, std::string_view method, const std::string& target, std::string_view body,
             Answer& answer) {
  if (auto f = check_can_block(c)) return f;
  Failure transport;
  c->core.run(std::make_unique<CallRequest>(transport, answer), format_request(method, target, body));
  if (transport) {
    transport.http_status = answer.status > 0 ? answer.status : 0;
    return transport;
  }
  if (answer.status < 200 || answer.status > 299) return from_http(answer.status, answer.body, answer.retry_after_s);
  return {};
}

Failure null_out() { return failure(LLMC_ERR_INVALID_ARGUMENT, "the out-parameter is NULL"); }

Failure session_path(const char* id, std::string& out) {
  std::string_view v;
  if (auto f = check_text(id, "the session id", v, false, 256)) return f;
  if (v.empty()) return failure(LLMC_ERR_INVALID_ARGUMENT, "the session id is empty");
  out = "/v1/sessions/" + path_segment(v);
  return {};
}

// An HTTP method is a token; a path starts with '/' and holds no blank or control character.
Failure check_call(const char* method, const char* path, std::string_view& m, std::string_view& p) {
  if (auto f = check_text(method, "method", m, false, 32)) return f;
  if (m.empty() || !std::all_of(m.begin(), m.end(), [](unsigned char ch) { return std::isupper(ch) != 0; })) {
    return failure(LLMC_ERR_INVALID_ARGUMENT, "method must be an upper-case HTTP method such as GET");
  }
  if (auto f = check_text(path, "path", p, false, 4096)) return f;
  if (p.empty() || p[0] != '/' ||
      !std::all_of(p.begin(), p.end(), [](unsigned char ch) { return ch > 0x20 && ch != 0x7f; })) {
    return failure(LLMC_ERR_INVALID_ARGUMENT, "path must start with '/' and hold no blank or control character");
  }
  return {};
}

}  // namespace
}  // namespace llmc::detail

using llmc::detail::Answer;
using llmc::detail::entry;
using llmc::detail::Failure;
using llmc::detail::failure;

extern "C" {

llmc_code llmc_session_create(llmc_client* c, const char* system_prompt, const char* app, char** id_out) {
  return llmc_session_create_ex(c, system_prompt, app, nullptr, id_out);
}

llmc_code llmc_session_create_ex(llmc_client* c, const char* system_prompt, const char* app, const char* overflow,
                                 char** id_out) {
  if (id_out != nullptr) *id_out = nullptr;
  return entry(c, [&]() -> Failure {
    if (id_out == nullptr) return llmc::detail::null_out();
    std::string_view sys, name, policy;
    if (auto f = llmc::detail::check_text(system_prompt, "system_prompt", sys, true)) return f;
    if (auto f = llmc::detail::check_text(app, "app", name, true, 256)) return f;
    if (auto f = llmc::detail::check_text(overflow, "overflow", policy, true, 64)) return f;
    nlohmann::json body = nlohmann::json::object();
    if (system_prompt != nullptr) body["system_prompt"] = sys;
    if (app != nullptr) body["app"] = name;
    if (overflow != nullptr) body["overflow"] = policy;  // llmd checks the name
    Answer a;
    if (auto f = llmc::detail::call(c, "POST", "/v1/sessions", body.dump(), a)) return f;
    return llmc::detail::session_id_from(a.body, id_out);
  });
}

llmc_code llmc_session_list(llmc_client* c, llmc_sessions** out) {
  if (out != nullptr) *out = nullptr;
  return entry(c, [&]() -> Failure {
    if (out == nullptr) return llmc::detail::null_out();
    Answer a;
    if (auto f = llmc::detail::call(c, "GET", "/v1/sessions", {}, a)) return f;
    return llmc::detail::session_list_from(a.body, out);
  });
}

llmc_code llmc_session_get(llmc_client* c, const char* id, llmc_session_detail** out) {
  if (out != nullptr) *out = nullptr;
  return entry(c, [&]() -> Failure {
    if (out == nullptr) return llmc::detail::null_out();
    std::string path;
    if (auto f = llmc::detail::session_path(id, path)) return f;
    Answer a;
    if (auto f = llmc::detail::call(c, "GET", path, {}, a)) return f;
    return llmc::detail::session_detail_from(a.body, out);
  });
}

llmc_code llmc_session_delete(llmc_client* c, const char* id) {
  return entry(c, [&]() -> Failure {
    std::string path;
    if (auto f = llmc::detail::session_path(id, path)) return f;
    Answer a;
    return llmc::detail::call(c, "DELETE", path, {}, a);
  });
}

llmc_code llmc_session_fork(llmc_client* c, const char* id, char** new_id_out) {
  if (new_id_out != nullptr) *new_id_out = nullptr;
  return entry(c, [&]() -> Failure {
    if (new_id_out == nullptr) return llmc::detail::null_out();
    std::string path;
    if (auto f = llmc::detail::session_path(id, path)) return f;
    Answer a;
    if (auto f = llmc::detail::call(c, "POST", path + "/fork", {}, a)) return f;
    return llmc::detail::session_id_from(a.body, new_id_out);
  });
}

llmc_code llmc_session_prewarm(llmc_client* c, const char* id, uint32_t* tokens_out, uint32_t* loaded_out,
                               uint32_t* restored_out) {
  for (uint32_t* out : {tokens_out, loaded_out, restored_out}) {
    if (out != nullptr) *out = 0;
  }
  return entry(c, [&]() -> Failure {
    std::string path;
    if (auto f = llmc::detail::session_path(id, path)) return f;
    Answer a;
    if (auto f = llmc::detail::call(c, "POST", path + "/prewarm", {}, a)) return f;
    const auto j = nlohmann::json::parse(a.body, nullptr, false);
    auto count = [&](const char* key, uint32_t* out) {
      if (out != nullptr && j.is_object() && j.contains(key) && j[key].is_number_unsigned()) {
        *out = j[key].get<uint32_t>();
      }
    };
    count("tokens", tokens_out);
    count("loaded_tokens", loaded_out);
    count("restored_tokens", restored_out);
    return {};
  });
}

llmc_code llmc_session_rewind(llmc_client* c, const char* id, int how, uint32_t count, llmc_session_detail** out) {
  if (out != nullptr) *out = nullptr;
  return entry(c, [&]() -> Failure {
    std::string path;
    if (auto f = llmc::detail::session_path(id, path)) return f;
    nlohmann::json body = nlohmann::json::object();
    if (how == LLMC_REWIND_DROP_LAST) {
      body["drop_last"] = count;
    } else if (how == LLMC_REWIND_KEEP) {
      body["keep"] = count;
    } else {
      return failure(LLMC_ERR_INVALID_ARGUMENT, "how must be LLMC_REWIND_DROP_LAST or LLMC_REWIND_KEEP");
    }
    Answer a;
    if (auto f = llmc::detail::call(c, "POST", path + "/rewind", body.dump(), a)) return f;
    if (out == nullptr) return {};
    return llmc::detail::session_detail_from(a.body, out);
  });
}

llmc_code llmc_status_get(llmc_client* c, llmc_daemon_status** out) {
  if (out != nullptr) *out = nullptr;
  return entry(c, [&]() -> Failure {
    if (out == nullptr) return llmc::detail::null_out();
    Answer a;
    if (auto f = llmc::detail::call(c, "GET", "/v1/status", {}, a)) return f;
    return llmc::detail::daemon_status_from(a.body, out);
  });
}

llmc_code llmc_call(llmc_client* c, const char* method, const char* path, const char* body, int* http_status,
                    char** body_out) {
  if (http_status != nullptr) *http_status = 0;
  if (body_out != nullptr) *body_out = nullptr;
  return entry(c, [&]() -> Failure {
    std::string_view m, p, b;
    if (auto f = llmc::detail::check_call(method, path, m, p)) return f;
    if (auto f = llmc::detail::check_text(body, "body", b, true)) return f;
    Answer a;
    Failure f = llmc::detail::call(c, m, std::string(p), b, a);
    if (http_status != nullptr) *http_status = a.status > 0 ? a.status : 0;
    if (body_out != nullptr && a.status > 0) {
      llmc::detail::BlockSize size;
      size.str(a.body);
      llmc::detail::Block block(size);
      block.str(a.body);
      *body_out = static_cast<char*>(block.release());
    }
    return f;
  });
}

}  // extern "C"
