// Scenario "grammar" (see scenario_grammar.h).
#include "bench/scenario_grammar.h"

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/llama_server_process.h"
#include "bench/llmd_process.h"
#include "tools/http_client/http_client.h"

namespace llmd::bench {
namespace {

using nlohmann::json;

constexpr int kMaxTokens = 96;
constexpr const char* kVariants[] = {"plain", "json", "tools"};
// Prompts cycled through, the same for every variant.
constexpr const char* kPrompts[] = {"Tell me about your day.", "What is your favourite animal?",
                                    "Describe the weather today.", "Who is your best friend?"};

const json& schema() {
  static const json s = json::parse(R"({
    "type": "object",
    "properties": {"title": {"type": "string"}, "mood": {"type": "string", "enum": ["happy", "sad", "calm"]},
                   "count": {"type": "integer"}},
    "required": ["title", "mood", "count"], "additionalProperties": false})");
  return s;
}

json request(const std::string& variant, const std::string& prompt) {
  json b = {{"messages", json::array({{{"role", "user"}, {"content", prompt}}})},
            {"max_tokens", kMaxTokens},
            {"temperature", 0},
            {"stream", false}};
  if (variant == "json") {
    b["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "answer"}, {"schema", schema()}}}};
  } else if (variant == "tools") {
    b["tools"] = json::array({{{"type", "function"},
                               {"function",
                                {{"name", "get_weather"},
                                 {"description", "The weather in a city"},
                                 {"parameters",
                                  {{"type", "object"},
                                   {"properties", {{"city", {{"type", "string"}}}, {"unit", {{"enum", {"c", "f"}}}}}},
                                   {"required", {"city", "unit"}}}}}}}});
    b["tool_choice"] = "required";
  }
  return b;
}

struct Samples {
  std::map<std::string, std::vector<double>> tps;     // per variant: decode tokens/s of each request
  std::map<std::string, std::vector<double>> tokens;  // completion tokens of each request
  std::map<std::string, std::vector<double>> prompt;  // prompt tokens of each request
  std::map<std::string, std::string> failed;          // a variant the server refused, and why
};

// One request; decode tokens/s as the server timed it (llmd: decode_tokens_per_second; llama-server:
// predicted_per_second). A request of fewer than 2 tokens has no decode rate and is counted as 0.
Status measure(const std::string& socket, bool llama_server, const std::string& variant, const std::string& prompt,
               Samples& out) {
  client::HttpClient c(socket);
  auto r = c.request("POST", "/v1/chat/completions", request(variant, prompt).dump());
  if (!r) return r.error();
  const json j = json::parse(r->body, nullptr, false);
  if (r->status != 200 || !j.is_object()) {
    return Error(Errc::internal, variant + ": HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 300));
  }
  const json t = j.value("timings", json::object());
  const double tps = llama_server ? t.value("predicted_per_second", 0.0) : t.value("decode_tokens_per_second", 0.0);
  out.tps[variant].push_back(tps);
  out.tokens[variant].push_back(j.value("usage", json::object()).value("completion_tokens", 0.0));
  out.prompt[variant].push_back(j.value("usage", json::object()).value("prompt_tokens", 0.0));
  return {};
}

// n rounds of every variant, interleaved; a variant the server refuses is left out of the rest.
void run_variants(const std::string& socket, bool llama_server, int n, Samples& out) {
  for (int i = 0; i < n; ++i) {
    const std::string prompt = kPrompts[static_cast<std::size_t>(i) % std::size(kPrompts)];
    for (const char* v : kVariants) {
      if (out.failed.count(v) != 0) continue;
      if (auto st = measure(socket, llama_server, v, prompt, out); !st) out.failed[v] = st.error().message();
    }
  }
}

double p50(const std::vector<double>& v) { return percentile(v, 50); }
double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

Status measure_model(const BenchEnv& env, const std::string& name, const std::string& path, int n, Report& report,
                     json& context) {
  Samples ours, theirs;
  {
    LlmdProcess d;
    LLMD_TRY_STATUS(d.start(env, path, {"--slots", "1", "--ctx", "2048"}));
    Samples warm;
    run_variants(d.socket(), false, 1, warm);  // loads, first grammars
    if (warm.failed.count("plain") != 0) return Error(Errc::internal, name + ": llmd refused a plain chat: " + warm.failed["plain"]);
    ours.failed = warm.failed;  // a variant llmd refuses is reported as such, the others measured
    run_variants(d.socket(), false, n, ours);
  }
  std::string server_note;
  {
    LlamaServerProcess ls;
    if (auto st = ls.start(env, path, {"--jinja", "-np", "1", "-c", "2048"}); !st) {
      server_note = "llama-server did not start: " + st.error().message();
    } else {
      Samples warm;
      run_variants(ls.socket(), true, 1, warm);
      theirs.failed = warm.failed;
      run_variants(ls.socket(), true, n, theirs);
    }
  }

  std::printf("%-28s %-6s %10s %10s %9s %8s %8s %14s %9s\n", name.c_str(), "", "p50 tok/s", "mean tok/s", "vs plain",
              "prompt", "tokens", "llama-server", "llmd/ls");
  json rows = json::object();
  const double plain = p50(ours.tps["plain"]);
  const double ls_plain = p50(theirs.tps["plain"]);
  for (const char* v : kVariants) {
    if (auto f = ours.failed.find(v); f != ours.failed.end()) {
      std::printf("%-28s %-6s llmd refused it: %s\n", "", v, f->second.substr(0, 200).c_str());
      rows[v] = {{"llmd_failed", f->second}};
      continue;
    }
    const auto& s = ours.tps[v];
    const double ls = theirs.failed.count(v) != 0 ? 0.0 : p50(theirs.tps[v]);
    std::printf("%-28s %-6s %10.1f %10.1f %8.3fx %8.1f %8.1f %14s %8.3fx\n", "", v, p50(s), summarize(s).mean,
                ratio(p50(s), plain), summarize(ours.prompt[v]).mean, summarize(ours.tokens[v]).mean,
                ls > 0 ? std::to_string(static_cast<int>(ls + 0.5)).c_str() : "-", ratio(p50(s), ls));
    json row = {{"llmd_tps_p50", p50(s)},
                {"llmd_tps_mean", summarize(s).mean},
                {"llmd_tps", s},
                {"llmd_tokens_mean", summarize(ours.tokens[v]).mean},
                {"llmd_prompt_tokens_mean", summarize(ours.prompt[v]).mean},
                {"llmd_vs_plain_p50", ratio(p50(s), plain)},
                {"llama_server_tps_p50", ls},
                {"llama_server_tps", theirs.tps[v]},
                {"llama_server_vs_plain_p50", ratio(ls, ls_plain)},
                {"llmd_vs_llama_server_p50", ratio(p50(s), ls)}};
    if (auto f = theirs.failed.find(v); f != theirs.failed.end()) row["llama_server_failed"] = f->second;
    rows[v] = row;
  }
  if (!server_note.empty()) std::printf("%-28s %s\n", "", server_note.c_str());
  std::fflush(stdout);  // before the next fork: a child would write the unflushed table again
  context[name] = {{"variants", rows}, {"requests_per_variant", n}};
  if (!server_note.empty()) context[name]["llama_server"] = server_note;

  // The table's rows: each constrained variant against plain (the issue's target), and llmd's
  // json against llama-server's json.
  for (const char* v : {"json", "tools"}) {
    if (ours.failed.count(v) != 0) continue;
    Row r{"grammar", name + " " + v + " decode tok/s", summarize(ours.tps[v]), summarize(ours.tps["plain"]), true};
    r.baseline = "llmd plain";
    report.rows.push_back(std::move(r));
  }
  if (ours.failed.count("json") == 0 && theirs.failed.count("json") == 0 && !theirs.tps["json"].empty()) {
    report.rows.push_back(
        {"grammar", name + " json decode tok/s", summarize(ours.tps["json"]), summarize(theirs.tps["json"]), true});
  }
  return {};
}

}  // namespace

Status run_grammar_scenario(const BenchEnv& env, Report& report) {
  const int n = env.quick ? 10 : 30;
  std::printf("\ngrammar: %d greedy chat requests per variant (max_tokens %d), interleaved: plain, response_format "
              "json_schema, tools with tool_choice required; server-side decode tok/s\n",
              n, kMaxTokens);
  std::fflush(stdout);
  json context;
  const std::string shared = LLMD_BENCH_SHARED_MODELS_DIR;
  LLMD_TRY_STATUS(measure_model(env, "stories260K", shared + "/stories260K.gguf", n, report, context));
  LLMD_TRY_STATUS(measure_model(env, "TinyStories-656K-Q8_0", shared + "/TinyStories-656K-Q8_0.gguf", n, report, context));
  auto smollm = ensure_model(env, "smollm2-135m", "q8_0");
  if (!smollm) return smollm.error();
  LLMD_TRY_STATUS(measure_model(env, "smollm2-135m-q8_0 (generated)", *smollm, n, report, context));
  context["max_tokens"] = kMaxTokens;
  context["schema"] = schema();
  report.context["grammar"] = context;
  return {};
}

}  // namespace llmd::bench
