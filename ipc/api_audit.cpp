// POST /v1/sessions/{id}/audit: the KV audit (see api.h, kvstore/kv_audit.h); POST
// /v1/sessions/{id}/prewarm: the session's KV brought into a slot.
#include <cmath>

#include "ipc/api.h"
#include "ipc/api_errors.h"
#include "ipc/json_fields.h"

namespace llmd::ipc {
namespace {

// JSON has no infinity or NaN: such a figure (a value that is not a number at all) is shown as null.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json compare_json(const kvstore::AuditCompare& c) {
  return {{"ok", c.ok},
          {"cells", c.cells},
          {"max_abs_diff", number(c.max_abs_diff)},
          {"max_excess", number(c.max_excess)},
          {"max_abs", number(c.max_abs)},
          {"rms_ratio", number(c.rms_ratio)},
          {"error", c.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(c.error)}};
}

}  // namespace

nlohmann::json audit_json(const kvstore::AuditReport& r) {
  nlohmann::json chunks = nlohmann::json::array();
  for (const auto& c : r.chunks) {
    nlohmann::json copies = nlohmann::json::array();
    for (const auto& copy : c.copies) {
      nlohmann::json j = compare_json(copy.compare);
      j["tier"] = copy.tier;
      j["codec"] = std::string(kvstore::codec_name(copy.codec));
      copies.push_back(std::move(j));
    }
    chunks.push_back({{"index", c.index},
                      {"first_pos", c.first_pos},
                      {"cells", c.n_cells},
                      {"stale", c.stale},
                      {"copies", std::move(copies)}});
  }
  nlohmann::json resident = nullptr;
  if (r.resident) {
    resident = compare_json(r.resident->compare);
    resident["slot"] = r.resident->slot;
    resident["tokens"] = r.resident->tokens;
    resident["matched"] = r.resident->matched;
  }
  return {{"object", "session.audit"},
          {"ok", r.ok()},
          {"tokens", r.tokens},
          {"checked", r.checked},
          {"failed", r.failed},
          {"max_abs_diff", number(r.max_abs_diff)},
          {"chunks", std::move(chunks)},
          {"resident", std::move(resident)}};
}

namespace {

// A request with no options: a field sent anyway is answered, never ignored. True if none came.
bool no_fields(const HttpRequest& req, Responder& r, const std::string& what) {
  if (req.body.empty()) return true;
  auto body = parse_object(req.body);
  if (!body) {
    reply_error(r, body.error());
    return false;
  }
  if (body->empty()) return true;
  const std::string field = body->begin().key();
  reply_error(r, http_error(400, what + " takes no fields; \"" + field + "\" is not supported", "invalid_request", field));
  return false;
}

}  // namespace

void Api::prewarm_session(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  if (!no_fields(req, *r, "the prewarm")) return;
  service_.prewarm_session(caller_of(req.peer), id, [r, id](Result<core::PrewarmResult> p) {
    if (!p) return reply_error(*r, p.error());
    reply_json(*r, 200,
               {{"id", id},
                {"tokens", p->tokens},
                {"resident_tokens", p->resident},
                {"loaded_tokens", p->loaded},
                {"restored_tokens", p->restored},
                {"timings", timings_json(p->timings, 0)}});
  });
}

void Api::audit_session(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  if (!no_fields(req, *r, "the audit")) return;
  service_.audit_session(caller_of(req.peer), id, [r, id](Result<kvstore::AuditReport> report) {
    if (!report) return reply_error(*r, report.error());
    nlohmann::json j = audit_json(*report);
    j["id"] = id;
    reply_json(*r, 200, j);
  });
}

}  // namespace llmd::ipc
