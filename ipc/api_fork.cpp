// POST /v1/sessions/{id}/fork and /v1/sessions/{id}/rewind (see api.h, Service::fork_session and
// Service::rewind_session).
#include "ipc/api.h"
#include "ipc/api_errors.h"
#include "ipc/json_fields.h"
#include "ipc/turn_options.h"

namespace llmd::ipc {

void Api::fork_session(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  // A fork has no options: a field sent anyway is answered, never ignored.
  if (!req.body.empty()) {
    auto body = parse_object(req.body);
    if (!body) return reply_error(*r, body.error());
    if (!body->empty()) {
      const std::string field = body->begin().key();
      return reply_error(*r, http_error(400, "a fork takes no fields; \"" + field + "\" is not supported",
                                        "invalid_request", field));
    }
  }
  service_.fork_session(caller_of(req.peer), id, [r](Result<core::SessionInfo> s) {
    if (!s) return reply_error(*r, s.error());
    reply_json(*r, 201, session_json(*s));
  });
}

void Api::rewind_session(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  auto how = read_rewind(*body);
  if (!how) return reply_error(*r, how.error());
  service_.rewind_session(caller_of(req.peer), id, *how, [r](Result<core::SessionDetail> d) {
    if (!d) return reply_error(*r, d.error());
    reply_json(*r, 200, session_detail_json(*d));
  });
}

}  // namespace llmd::ipc
