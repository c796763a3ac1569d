// Scenario "continuation" (see scenario_continuation.h).
#include "bench/scenario_continuation.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/llmd_process.h"
#include "bench/process.h"

namespace llmd::bench {
namespace {

using nlohmann::json;

constexpr int kSessions = 12;
constexpr int kFirstTokens = 160, kSecondTokens = 48;
constexpr const char* kOpenings[kSessions] = {"Once upon a time", "One day, Lily", "Tom and his dog", "There was a big",
                                              "The little bird",  "Sam wanted to", "In the park,",    "Mia had a red",
                                              "Ben liked to",     "Far away, a",   "Every morning,",  "Max and Sue"};

struct Policy {
  const char* name;
  std::vector<std::string> args;
};
const Policy kPolicies[] = {
    {"exact", {"--kv-policy", "exact"}},
    {"q8_0", {"--kv-policy", "q8_0"}},
    {"q4_0", {"--kv-policy", "q4_0"}},
    {"kivi8", {"--kv-policy", "kivi8"}},
    {"kivi4", {"--kv-policy", "kivi4"}},
    {"kivi2", {"--kv-policy", "kivi2"}},
    {"position 0.45", {"--kv-policy", "position", "--kv-target-ratio", "0.45"}},
    {"attention 0.45", {"--kv-policy", "attention", "--kv-target-ratio", "0.45"}},
};

struct Answer {
  std::string text;
  int loaded = 0, prompt = 0;
  std::uint64_t kv_bytes = 0;
};

struct Run {
  std::vector<Answer> second;  // by session
};

Result<json> turn(const std::string& socket, const std::string& id, const std::string& content, int max_tokens) {
  return request_json(socket, "POST", "/v1/sessions/" + id + "/messages",
              {{"content", content}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}, {"stream", false}});
}

Status run_policy(const BenchEnv& env, const std::string& model, const Policy& policy, Run& out) {
  std::vector<std::string> args = {"--slots", "1", "--chunk-tokens", "16", "--flash-attn", "off", "--ctx", "512"};
  args.insert(args.end(), policy.args.begin(), policy.args.end());
  LlmdProcess d;
  LLMD_TRY_STATUS(d.start(env, model, args));
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) {
    auto s = request_json(d.socket(), "POST", "/v1/sessions", json::object());
    if (!s) return s.error();
    ids.push_back((*s)["id"]);
    auto first = turn(d.socket(), ids.back(), kOpenings[i], kFirstTokens);
    if (!first) return first.error();
  }
  for (int i = 0; i < kSessions; ++i) {
    auto second = turn(d.socket(), ids[static_cast<std::size_t>(i)], "Then", kSecondTokens);
    if (!second) return second.error();
    Answer a;
    a.text = (*second)["message"].value("content", "");
    a.loaded = (*second)["usage"].value("loaded_tokens", 0);
    a.prompt = (*second)["usage"].value("prompt_tokens", 0);
    out.second.push_back(std::move(a));
  }
  // Each session's stored bytes once the last write-backs are done (10 s at most).
  for (int i = 0, idle = 0; i < 200 && idle < 2; ++i) {
    auto st = request_json(d.socket(), "GET", "/v1/status");
    idle = st && (*st)["kv"].value("pending_write_backs", 1) == 0 ? idle + 1 : 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (int i = 0; i < kSessions; ++i) {
    auto info = request_json(d.socket(), "GET", "/v1/sessions/" + ids[static_cast<std::size_t>(i)]);
    if (info && info->contains("kv")) out.second[static_cast<std::size_t>(i)].kv_bytes = (*info)["kv"]["ram"].value("bytes", 0ull);
  }
  return {};
}

double common_prefix_share(const std::string& got, const std::string& want) {
  if (want.empty()) return got.empty() ? 1.0 : 0.0;
  const auto mismatch = std::mismatch(want.begin(), want.end(), got.begin(), got.end());
  return static_cast<double>(mismatch.first - want.begin()) / static_cast<double>(want.size());
}

Status run_model(const BenchEnv& env, const RealModel& spec, Report& report, json& ctx) {
  const std::string model = real_model_path(spec);
  std::vector<Run> runs;
  for (const Policy& p : kPolicies) {
    std::fprintf(stderr, "llmd-bench: continuation %s, %s\n", spec.name, p.name);
    Run r;
    LLMD_TRY_STATUS(run_policy(env, model, p, r));
    runs.push_back(std::move(r));
  }
  std::printf("\ncontinuation: %s, %d sessions, 1 slot, chunks of 16; second answers (%d tokens) vs the exact "
              "policy's\n%-15s %10s %9s %10s %10s\n",
              spec.name, kSessions, kSecondTokens, "policy", "KV bytes", "loaded%", "match%", "identical");
  json rows = json::array();
  const Run& exact = runs.front();
  for (std::size_t p = 0; p < runs.size(); ++p) {
    std::vector<double> match, loaded, bytes;
    int identical = 0;
    for (int i = 0; i < kSessions; ++i) {
      const Answer& a = runs[p].second[static_cast<std::size_t>(i)];
      const Answer& e = exact.second[static_cast<std::size_t>(i)];
      match.push_back(100.0 * common_prefix_share(a.text, e.text));
      identical += a.text == e.text ? 1 : 0;
      loaded.push_back(a.prompt ? 100.0 * a.loaded / a.prompt : 0.0);
      bytes.push_back(static_cast<double>(a.kv_bytes));
    }
    const double m = summarize(match).mean, l = summarize(loaded).mean, b = summarize(bytes).mean;
    std::printf("%-15s %10.0f %9.1f %10.1f %7d/%d\n", kPolicies[p].name, b, l, m, identical, kSessions);
    rows.push_back({{"policy", kPolicies[p].name}, {"kv_bytes", b}, {"loaded_pct", l}, {"match_pct", m},
                    {"identical", identical}, {"sessions", kSessions}});
    if (p == 0) continue;
    Row r{"continuation", std::string(spec.name) + " " + kPolicies[p].name + " match %", summarize(match),
          summarize(std::vector<double>(kSessions, 100.0)), true};
    r.baseline = "exact policy";
    report.rows.push_back(std::move(r));
  }
  ctx[spec.name] = rows;
  return {};
}

}  // namespace

Status run_continuation_scenario(const BenchEnv& env, Report& report) {
  json ctx = json::object();
  for (const RealModel& m : kRealModels) LLMD_TRY_STATUS(run_model(env, m, report, ctx));
  report.context["continuation"] = ctx;
  return {};
}

}  // namespace llmd::bench
