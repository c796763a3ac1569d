// The session endpoints: create, list, show, delete (see api.h).
#include "ipc/api.h"
#include "ipc/api_errors.h"
#include "ipc/chat_request.h"
#include "ipc/json_fields.h"

namespace llmd::ipc {

void Api::create_session(HttpRequest& req, std::shared_ptr<Responder> r) {
  nlohmann::json body = nlohmann::json::object();
  if (!req.body.empty()) {
    auto parsed = parse_object(req.body);
    if (!parsed) return reply_error(*r, parsed.error());
    body = std::move(*parsed);
  }
  if (auto st = check_fields(body, {"system_prompt", "app", "overflow"}, "/v1/sessions"); !st) {
    return reply_error(*r, st.error());
  }
  auto system_prompt = opt_string(body, "system_prompt");
  if (!system_prompt) return reply_error(*r, system_prompt.error());
  auto app = opt_string(body, "app");
  if (!app) return reply_error(*r, app.error());
  auto overflow_name = opt_string(body, "overflow");
  if (!overflow_name) return reply_error(*r, overflow_name.error());
  std::optional<core::Overflow> overflow;
  if (*overflow_name) {
    auto o = core::parse_overflow(**overflow_name);
    if (!o) return reply_error(*r, o.error());
    overflow = *o;
  }
  service_.create_session(caller_of(req.peer), std::move(*system_prompt), app->value_or(""), overflow,
                          [r](Result<core::SessionInfo> s) {
                            if (!s) return reply_error(*r, s.error());
                            reply_json(*r, 201, session_json(*s));
                          });
}

void Api::list_sessions(HttpRequest& req, std::shared_ptr<Responder> r) {
  service_.list_sessions(caller_of(req.peer), [r](Result<std::vector<core::SessionInfo>> list) {
    if (!list) return reply_error(*r, list.error());
    nlohmann::json data = nlohmann::json::array();
    for (const auto& s : *list) data.push_back(session_json(s));
    reply_json(*r, 200, {{"object", "list"}, {"data", data}});
  });
}

nlohmann::json session_detail_json(const core::SessionDetail& d) {
  nlohmann::json j = session_json(d.info);
  nlohmann::json msgs = nlohmann::json::array();
  // in_window: whether the model's window holds it (system messages always; the others from
  // window.first_message on); the transcript itself is whole.
  for (const auto& m : d.messages) {
    msgs.push_back({{"role", m.role},
                    {"content", m.content},
                    {"created", m.created_ms / 1000},
                    {"in_window", m.role == "system" || m.seq >= d.info.window.first_message}});
  }
  j["messages"] = msgs;
  return j;
}

void Api::get_session(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  service_.get_session(caller_of(req.peer), id, [r](Result<core::SessionDetail> d) {
    if (!d) return reply_error(*r, d.error());
    reply_json(*r, 200, session_detail_json(*d));
  });
}

void Api::delete_session(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  service_.delete_session(caller_of(req.peer), id, [r, id](Status st) {
    if (!st) return reply_error(*r, st.error());
    reply_json(*r, 200, {{"id", id}, {"object", "session.deleted"}, {"deleted", true}});
  });
}

}  // namespace llmd::ipc
