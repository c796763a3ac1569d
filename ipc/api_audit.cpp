// POST /v1/sessions/{id}/audit: the KV audit (see api.h, kvstore/kv_audit.h).
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

void Api::audit_session(HttpRequest& req, std::shared_ptr<Responder> r, const std::string& id) {
  // The audit has no options: a field sent anyway is answered, never ignored.
  if (!req.body.empty()) {
    auto body = parse_object(req.body);
    if (!body) return reply_error(*r, body.error());
    if (!body->empty()) {
      const std::string field = body->begin().key();
      return reply_error(*r, http_error(400, "the audit takes no fields; \"" + field + "\" is not supported",
                                        "invalid_request", field));
    }
  }
  service_.audit_session(caller_of(req.peer), id, [r, id](Result<kvstore::AuditReport> report) {
    if (!report) return reply_error(*r, report.error());
    nlohmann::json j = audit_json(*report);
    j["id"] = id;
    reply_json(*r, 200, j);
  });
}

}  // namespace llmd::ipc
