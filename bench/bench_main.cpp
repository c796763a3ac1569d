// llmd-bench: runs named benchmark scenarios against llama.cpp's own tools (built from the same
// pinned source) in one run and prints a table and a JSON file of results, ratios first.
// Normally started through bench/run.sh, which builds everything it needs first.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <sys/utsname.h>

#include "bench/bench_env.h"
#include "bench/report.h"
#include "bench/scenario_continuation.h"
#include "bench/scenario_conversations.h"
#include "bench/scenario_daemon.h"
#include "bench/scenario_engine.h"
#include "bench/scenario_fair.h"
#include "bench/scenario_grammar.h"
#include "bench/scenario_switch.h"
#include "bench/scenario_window.h"
#include "bench/scenario_quality.h"
#include "engine/backend.h"
#include "engine/context.h"

namespace {

using llmd::bench::BenchEnv;
using llmd::bench::Report;
using Scenario = std::function<llmd::Status(const BenchEnv&, Report&)>;

const std::map<std::string, std::pair<Scenario, std::string>>& scenarios() {
  static const std::map<std::string, std::pair<Scenario, std::string>> s = {
      {"conversations", {llmd::bench::run_conversations_scenario,
                         "8 conversations on 2 slots: TTFT of sessions, stateless llmd, llama-server; restart"}},
      {"engine", {llmd::bench::run_engine_scenario,
                  "engine prefill (pp512) and decode (tg128) tokens/s vs llama-bench, smollm2-135m q8_0"}},
      {"daemon", {llmd::bench::run_daemon_scenario,
                  "decode tokens/s through llmd (SSE, measured by the client) vs llama-bench tg128; TTFT"}},
      {"switch", {llmd::bench::run_switch_scenario,
                  "context switch: TTFT from T1/T2 vs re-prefill; restore vs llama-server /slots, memcpy, read"}},
      {"fair", {llmd::bench::run_fair_scenario,
                "fair scheduler: per-client service (Jain) vs fifo and llama-server; 8-client tok/s, TTFT"}},
      {"grammar", {llmd::bench::run_grammar_scenario,
                   "decode tok/s: plain vs json_schema vs tools (required), 3 models; llmd vs llama-server"}},
      {"quality", {llmd::bench::run_quality_scenario,
                   "KV codecs and policies x chunk sizes: bytes/token vs greedy agreement and KL, 2 models"}},
      {"continuation", {llmd::bench::run_continuation_scenario,
                        "KV policies through the daemon: restored sessions' greedy answers vs the exact policy's"}},
      {"window", {llmd::bench::run_window_scenario,
                  "overflow policies: sliding vs drop_oldest against the full context, both real models"}},
  };
  return s;
}

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: llmd-bench [options] [SCENARIO...]   (default: every scenario)\n"
               "  --threads N      threads for llmd and llama.cpp alike (default: all CPUs)\n"
               "  --reps N         repetitions per measurement (default 5)\n"
               "  --rounds N       alternations of llmd and llama.cpp (default 2)\n"
               "  --quick          a short smoke run, where a scenario has one (conversations, grammar)\n"
               "  --models-dir D   cache of generated models (default %s)\n"
               "  --out-dir D      where the JSON result goes (default %s)\n"
               "scenarios:\n",
               LLMD_BENCH_MODELS_DIR, LLMD_BENCH_OUT_DIR);
  for (const auto& [name, s] : scenarios()) std::fprintf(to, "  %-14s %s\n", name.c_str(), s.second.c_str());
}

std::string timestamp() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  BenchEnv env;
  env.models_dir = LLMD_BENCH_MODELS_DIR;
  env.vocab_dir = LLMD_BENCH_VOCAB_DIR;
  env.tools_dir = LLMD_BENCH_TOOLS_DIR;
  std::string out_dir = LLMD_BENCH_OUT_DIR;
  std::vector<std::string> names;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto number = [&](const char* flag) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "llmd-bench: %s needs a value\n", flag);
        std::exit(2);
      }
      const int v = std::atoi(argv[++i]);
      if (v <= 0) {
        std::fprintf(stderr, "llmd-bench: %s needs a positive number\n", flag);
        std::exit(2);
      }
      return v;
    };
    if (a == "--threads") {
      env.threads = number("--threads");
      env.threads_given = true;
    }
    else if (a == "--quick") env.quick = true;
    else if (a == "--reps") env.reps = number("--reps");
    else if (a == "--rounds") env.rounds = number("--rounds");
    else if (a == "--models-dir" && i + 1 < argc) env.models_dir = argv[++i];
    else if (a == "--out-dir" && i + 1 < argc) out_dir = argv[++i];
    else if (a == "--help" || a == "-h") { usage(stdout); return 0; }
    else if (scenarios().count(a) != 0) names.push_back(a);
    else {
      std::fprintf(stderr, "llmd-bench: unknown argument or scenario '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (names.empty()) {
    for (const auto& [name, s] : scenarios()) names.push_back(name);
  }
  if (env.threads == 0) env.threads = llmd::engine::default_thread_count();
  std::filesystem::create_directories(out_dir);
  const std::string stamp = timestamp();
  env.log_path = out_dir + "/llmd-bench-" + stamp + ".log";

  Report report;
  utsname u{};
  ::uname(&u);
  report.context["date"] = stamp;
  report.context["machine"] = {{"kernel", std::string(u.sysname) + " " + u.release}, {"arch", u.machine}};
  report.context["threads"] = env.threads;
  report.context["reps"] = env.reps;
  report.context["rounds"] = env.rounds;
  report.context["quick"] = env.quick;
  report.context["llama_cpp"] = llmd::engine::llama_version_string();

  int failures = 0;
  for (const auto& name : names) {
    std::fprintf(stderr, "llmd-bench: scenario %s\n", name.c_str());
    if (auto st = scenarios().at(name).first(env, report); !st) {
      std::fprintf(stderr, "llmd-bench: scenario %s failed: %s\n", name.c_str(), st.error().message().c_str());
      ++failures;
    }
  }
  llmd::bench::print_table(report);
  const std::string json_path = out_dir + "/bench-" + stamp + ".json";
  std::ofstream(json_path) << llmd::bench::to_json(report).dump(2) << "\n";
  std::filesystem::copy_file(json_path, out_dir + "/latest.json", std::filesystem::copy_options::overwrite_existing);
  std::printf("results: %s\n", json_path.c_str());
  return failures == 0 ? 0 : 1;
}
