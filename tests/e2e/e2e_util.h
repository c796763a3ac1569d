// Request helpers for the end-to-end tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client-lib/http_client.h"
#include "tests/e2e/daemon_process.h"
#include "tests/support/test_env.h"

namespace llmd::test {

struct JsonReply {
  unsigned status = 0;
  nlohmann::json body;
  std::string raw;
};

inline JsonReply call(const client::HttpClient& c, const std::string& method, const std::string& path,
                      const std::string& body = {}) {
  client::HttpClient copy = c;
  auto r = copy.request(method, path, body);
  EXPECT_TRUE(r) << method << " " << path << ": " << r.error().to_string();
  if (!r) return {};
  return {r->status, nlohmann::json::parse(r->body, nullptr, false), r->body};
}

inline JsonReply call(const client::HttpClient& c, const std::string& method, const std::string& path,
                      const nlohmann::json& body) {
  return call(c, method, path, body.dump());
}

struct Streamed {
  unsigned status = 0;
  std::vector<nlohmann::json> events;  // parsed events, [DONE] excluded
  bool done_marker = false;
  std::string text;                    // concatenated delta/text
};

inline Streamed stream(const client::HttpClient& c, const std::string& path, nlohmann::json body) {
  body["stream"] = true;
  Streamed s;
  client::HttpClient copy = c;
  auto r = copy.request("POST", path, body.dump(), [&](const std::string& data) {
    if (data == "[DONE]") {
      s.done_marker = true;
      return true;
    }
    auto ev = nlohmann::json::parse(data, nullptr, false);
    EXPECT_FALSE(ev.is_discarded()) << data;
    if (ev.contains("choices")) {
      const auto& ch = ev["choices"][0];
      if (ch.contains("delta") && ch["delta"].contains("content")) s.text += ch["delta"]["content"].get<std::string>();
      if (ch.contains("text")) s.text += ch["text"].get<std::string>();
    }
    s.events.push_back(std::move(ev));
    return true;
  });
  EXPECT_TRUE(r) << r.error().to_string();
  if (r) s.status = r->status;
  return s;
}

inline nlohmann::json greedy_body(int max_tokens) { return {{"max_tokens", max_tokens}, {"temperature", 0}}; }

}  // namespace llmd::test
