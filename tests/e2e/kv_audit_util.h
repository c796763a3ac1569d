// The KV audit from the tests: every stored copy of a session's KV and its resident KV checked
// against its recomputed history (POST /v1/sessions/{id}/audit, kvstore/kv_audit.h).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {

// The audit's answer (status 200 expected).
inline nlohmann::json audit(const client::HttpClient& c, const std::string& session) {
  auto r = call(c, "POST", "/v1/sessions/" + session + "/audit");
  EXPECT_EQ(r.status, 200u) << r.raw;
  return r.body;
}

// A readable account of what an audit found wrong, for test failure messages.
inline std::string audit_failures(const nlohmann::json& a) {
  std::string out;
  for (const auto& c : a.value("chunks", nlohmann::json::array())) {
    for (const auto& copy : c.value("copies", nlohmann::json::array())) {
      if (copy.value("ok", false)) continue;
      out += "chunk " + std::to_string(c.value("index", 0)) + " (" + copy.value("tier", "") + "): " +
             copy.value("error", nlohmann::json("?")).dump() + "\n";
    }
  }
  if (a.contains("resident") && a["resident"].is_object() && !a["resident"].value("ok", false)) {
    out += "resident: " + a["resident"].value("error", nlohmann::json("?")).dump() + "\n";
  }
  return out;
}

// Audits the session and expects every copy of its KV to be right; returns the copies checked.
inline int expect_kv_right(const client::HttpClient& c, const std::string& session) {
  const auto a = audit(c, session);
  EXPECT_TRUE(a.value("ok", false)) << session << ":\n" << audit_failures(a) << a.dump();
  if (std::getenv("LLMD_TEST_AUDIT_VERBOSE") != nullptr) {
    double rms = 0;
    for (const auto& ch : a.value("chunks", nlohmann::json::array())) {
      for (const auto& copy : ch.value("copies", nlohmann::json::array())) {
        if (copy["rms_ratio"].is_number()) rms = std::max(rms, copy["rms_ratio"].get<double>());
      }
    }
    if (a["resident"].is_object() && a["resident"]["rms_ratio"].is_number()) {
      rms = std::max(rms, a["resident"]["rms_ratio"].get<double>());
    }
    std::printf("audit %s: %d tokens, %d copies, max |diff| %s, max rms ratio %g\n", session.c_str(), a.value("tokens", 0),
                a.value("checked", 0), a["max_abs_diff"].dump().c_str(), rms);
  }
  return a.value("checked", 0);
}

}  // namespace llmd::test
