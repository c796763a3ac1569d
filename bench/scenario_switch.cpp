// Scenario "switch" (see scenario_switch.h).
#include "bench/scenario_switch.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/llmd_process.h"
#include "bench/process.h"
#include "tools/http_client/http_client.h"

namespace llmd::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace fs = std::filesystem;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct TurnTimes {
  double client_ttft = 0;  // request sent -> first token event
  json timings, usage;
};

// One streamed turn; the client's time to the first token, and the server's timings.
Result<TurnTimes> turn(const std::string& socket, const std::string& session, const std::string& content) {
  client::HttpClient c(socket);
  const json body = {{"content", content}, {"max_tokens", 2}, {"temperature", 0}, {"ignore_eos", true},
                     {"stream", true}};
  TurnTimes t;
  const auto t0 = Clock::now();
  bool first = false;
  auto r = c.request("POST", "/v1/sessions/" + session + "/messages", body.dump(), [&](const std::string& data) {
    if (data == "[DONE]") return true;
    auto ev = json::parse(data, nullptr, false);
    if (!ev.is_object()) return true;
    // The first event announces the role; the first token is the first content.
    if (!first && ev.contains("choices") && ev["choices"][0].contains("delta") &&
        ev["choices"][0]["delta"].value("content", "") != "") {
      first = true;
      t.client_ttft = ms_since(t0);
    }
    if (ev.contains("timings")) t.timings = ev["timings"];
    if (ev.contains("usage")) t.usage = ev["usage"];
    return true;
  });
  if (!r) return r.error();
  if (r->status != 200 || t.timings.is_null()) return Error(Errc::internal, "bad turn answer: " + r->body.substr(0, 300));
  return t;
}

double read_files_ms(const std::vector<fs::path>& files, int reps) {
  double best = 1e9;
  std::vector<char> buf;
  for (int i = 0; i < reps + 1; ++i) {
    const auto t = Clock::now();
    for (const auto& f : files) {
      std::FILE* in = std::fopen(f.c_str(), "rb");
      if (!in) continue;
      buf.resize(fs::file_size(f));
      const std::size_t n = std::fread(buf.data(), 1, buf.size(), in);
      (void)n;
      std::fclose(in);
    }
    best = std::min(best, ms_since(t));
  }
  return best;
}

struct ModeSamples {
  std::vector<double> ttft, restore, read, decode, recompute;
  std::uint64_t ram_bytes = 0, disk_bytes = 0;
  int history = 0;
  double plain_read_ms = 0;  // reading the session's chunk files with plain reads (best of reps)
};

// A session with ~n tokens of history in a daemon with one slot; each rep: another session's turn
// swaps it out, then its own turn swaps it back in.
Status measure_mode(const BenchEnv& env, const std::string& model, int n, const std::vector<std::string>& args,
                    bool restart_between, ModeSamples& out) {
  std::vector<std::string> all = {"--slots", "1", "--ctx", "4096", "--batch", "2048"};
  all.insert(all.end(), args.begin(), args.end());
  // LLMD_BENCH_SWITCH_ARGS: extra llmd settings to compare, e.g. "--chunk-tokens 16".
  if (const char* extra = std::getenv("LLMD_BENCH_SWITCH_ARGS")) {
    std::string word;
    for (const char* p = extra;; ++p) {
      if (*p == ' ' || *p == '\0') {
        if (!word.empty()) all.push_back(word);
        word.clear();
        if (*p == '\0') break;
      } else {
        word += *p;
      }
    }
  }
  LlmdProcess d;
  LLMD_TRY_STATUS(d.start(env, model, all));
  auto a = request_json(d.socket(), "POST", "/v1/sessions", json::object());
  if (!a) return a.error();
  auto b = request_json(d.socket(), "POST", "/v1/sessions", json::object());
  if (!b) return b.error();
  const std::string A = (*a)["id"], B = (*b)["id"];
  auto first = turn(d.socket(), A, words(n - 12, static_cast<std::uint64_t>(n)));
  if (!first) return first.error();
  out.history = first->usage.value("prompt_tokens", 0) + 1;
  for (int rep = -1; rep < env.reps; ++rep) {  // rep -1 warms up
    if (restart_between) {
      d.stop();
      LLMD_TRY_STATUS(d.start(env, model, all, /*keep_state=*/true));
    } else {
      auto other = turn(d.socket(), B, "Hi.");
      if (!other) return other.error();
    }
    auto t = turn(d.socket(), A, "Go on.");
    if (!t) return t.error();
    if (rep < 0) continue;
    const json& tm = t->timings;
    out.ttft.push_back(t->client_ttft);
    out.restore.push_back(tm.value("restore_read_ms", 0.0) + tm.value("restore_decode_ms", 0.0));
    out.read.push_back(tm.value("restore_read_ms", 0.0));
    out.decode.push_back(tm.value("restore_decode_ms", 0.0));
    out.recompute.push_back(tm.value("restore_recompute_ms", 0.0));
  }
  client::HttpClient c(d.socket());
  if (auto s = c.request("GET", "/v1/sessions/" + A); s && s->status == 200) {
    auto j = json::parse(s->body, nullptr, false);
    if (j.is_object() && j.contains("kv")) {
      out.ram_bytes = j["kv"]["ram"].value("bytes", 0ull);
      out.disk_bytes = j["kv"]["disk"].value("bytes", 0ull);
    }
  }
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(d.state_dir() / "kv" / A, ec)) files.push_back(e.path());
  out.plain_read_ms = read_files_ms(files, env.reps);
  return {};
}

// llama-server with one slot: the same history as a prompt, saved with /slots, then restored.
Status measure_llama_server(const BenchEnv& env, const std::string& model, int n, std::vector<double>& restore_ms,
                            std::uint64_t& state_bytes) {
  const fs::path dir = fs::temp_directory_path() / ("llmd-bench-ls-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "slots");
  const std::string sock = (dir / "ls.sock").string();
  const pid_t pid = ::fork();
  if (pid < 0) return errno_error(errno, "fork");
  if (pid == 0) {
    std::freopen(env.log_path.c_str(), "a", stderr);
    std::freopen(env.log_path.c_str(), "a", stdout);
    const std::string bin = env.tools_dir + "/llama-server", t = std::to_string(env.threads),
                      slots = (dir / "slots").string();
    ::execl(bin.c_str(), "llama-server", "-m", model.c_str(), "-c", "4096", "-np", "1", "-t", t.c_str(), "-tb",
            t.c_str(), "-b", "2048", "-fa", "auto", "--host", sock.c_str(), "--slot-save-path", slots.c_str(),
            "--no-webui", static_cast<char*>(nullptr));
    _exit(127);
  }
  struct Reaper {
    pid_t pid;
    fs::path dir;
    ~Reaper() {
      ::kill(pid, SIGTERM);
      int st = 0;
      ::waitpid(pid, &st, 0);
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } reaper{pid, dir};
  bool up = false;
  for (int i = 0; i < 600 && !up; ++i) {
    client::HttpClient c(sock);
    auto r = c.request("GET", "/health");
    up = r && r->status == 200;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!up) return Error(Errc::internal, "llama-server did not come up; see " + env.log_path);
  auto done = request_json(sock, "POST", "/completion",
                           {{"prompt", words(n - 12, static_cast<std::uint64_t>(n))}, {"n_predict", 1},
                            {"cache_prompt", true}});
  if (!done) return done.error();
  auto saved = request_json(sock, "POST", "/slots/0?action=save", {{"filename", "a.bin"}});
  if (!saved) return saved.error();
  state_bytes = fs::file_size(dir / "slots" / "a.bin");
  for (int rep = -1; rep < env.reps; ++rep) {
    auto erased = request_json(sock, "POST", "/slots/0?action=erase", json::object());
    if (!erased) return erased.error();
    auto r = request_json(sock, "POST", "/slots/0?action=restore", {{"filename", "a.bin"}});
    if (!r) return r.error();
    if (rep >= 0) restore_ms.push_back((*r)["timings"].value("restore_ms", 0.0));
  }
  return {};
}

// Plain memcpy of `bytes`, and a plain read of the files, best of reps (the floors for T1 and T2).
double memcpy_ms(std::uint64_t bytes, int reps) {
  std::vector<std::uint8_t> src(bytes, 1), dst(bytes);
  double best = 1e9;
  for (int i = 0; i < reps + 1; ++i) {
    const auto t = Clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    best = std::min(best, ms_since(t));
  }
  volatile std::uint8_t sink = dst[bytes / 2];
  (void)sink;
  return best;
}

Status run_model(const BenchEnv& env, const std::string& shape, Report& report, json& ctx) {
  auto model = ensure_model(env, shape, "q8_0");
  if (!model) return model.error();
  json per_n = json::array();
  for (int n : {512, 1024, 2048}) {
    std::fprintf(stderr, "llmd-bench: switch %s, %d tokens of history\n", shape.c_str(), n);
    ModeSamples t1, t2, re, t1_q8, t1_k4;
    LLMD_TRY_STATUS(measure_mode(env, *model, n, {"--restore", "chunks"}, false, t1));
    // The same T1 switch under lossy policies: uniform q8_0 (LLMS's baseline) and kivi4.
    LLMD_TRY_STATUS(measure_mode(env, *model, n, {"--restore", "chunks", "--kv-policy", "q8_0"}, false, t1_q8));
    LLMD_TRY_STATUS(measure_mode(env, *model, n, {"--restore", "chunks", "--kv-policy", "kivi4"}, false, t1_k4));
    LLMD_TRY_STATUS(measure_mode(env, *model, n, {"--restore", "chunks", "--kv-ram-mib", "0"}, true, t2));
    LLMD_TRY_STATUS(measure_mode(env, *model, n, {"--restore", "recompute"}, false, re));
    std::vector<double> ls;
    std::uint64_t ls_bytes = 0;
    if (auto st = measure_llama_server(env, *model, n, ls, ls_bytes); !st) {
      std::fprintf(stderr, "llmd-bench: llama-server /slots: %s\n", st.error().message().c_str());
    }
    const std::string tag = shape + " " + std::to_string(n);
    auto row = [&](const std::string& metric, const std::vector<double>& ours, const std::vector<double>& base,
                   const char* baseline) {
      Row r{"switch", tag + " " + metric, summarize(ours), summarize(base), false};
      r.baseline = baseline;
      report.rows.push_back(std::move(r));
    };
    row("TTFT T1 ms", t1.ttft, re.ttft, "re-prefill");
    row("TTFT T2 ms", t2.ttft, re.ttft, "re-prefill");
    if (!ls.empty()) row("restore T1 ms", t1.restore, ls, "llama-server /slots");
    if (!ls.empty()) row("restore T2 ms", t2.restore, ls, "llama-server /slots");
    const double copy = t1.ram_bytes ? memcpy_ms(t1.ram_bytes, env.reps) : 0.0;
    row("restore T1 ms", t1.restore, {copy}, "memcpy of its bytes");
    const double rd = t2.plain_read_ms;
    row("T2 read ms", t2.read, {rd}, "plain read of files");
    per_n.push_back({{"history_tokens", t1.history},
                     {"t1", {{"ttft_ms", summarize(t1.ttft).mean}, {"read_ms", summarize(t1.read).mean},
                             {"decode_ms", summarize(t1.decode).mean}, {"recompute_ms", summarize(t1.recompute).mean},
                             {"bytes", t1.ram_bytes}}},
                     {"t2", {{"ttft_ms", summarize(t2.ttft).mean}, {"read_ms", summarize(t2.read).mean},
                             {"decode_ms", summarize(t2.decode).mean}, {"recompute_ms", summarize(t2.recompute).mean},
                             {"bytes", t2.disk_bytes}}},
                     {"recompute", {{"ttft_ms", summarize(re.ttft).mean}, {"recompute_ms", summarize(re.recompute).mean}}},
                     {"llama_server_slots", {{"restore_ms", summarize(ls).mean}, {"state_bytes", ls_bytes}}},
                     {"memcpy_ms", copy},
                     {"plain_read_ms", rd}});
    row("restore T1 ms kivi4", t1_k4.restore, t1.restore, "exact policy");
    row("restore T1 ms q8_0", t1_q8.restore, t1.restore, "exact policy");
    // LLMS: sessions of this length that switch in under 10 ms, for a T1 budget (0 when one
    // restore takes longer).
    auto under10 = [](const ModeSamples& m, std::uint64_t mib) -> std::uint64_t {
      const double ms = summarize(m.restore).mean;
      return m.ram_bytes && ms > 0 && ms < 10.0 ? (mib << 20) / m.ram_bytes : 0;
    };
    json sessions = json::object();
    for (const auto& [name, m] : {std::pair<const char*, const ModeSamples*>{"exact", &t1}, {"q8_0", &t1_q8},
                                  {"kivi4", &t1_k4}}) {
      sessions[name] = {{"bytes", m->ram_bytes}, {"restore_ms", summarize(m->restore).mean},
                        {"256MiB", under10(*m, 256)}, {"1GiB", under10(*m, 1024)}};
    }
    for (std::uint64_t mib : {256ull, 1024ull}) {
      Row r{"switch", tag + " sessions <10 ms in " + (mib == 256 ? "256 MiB" : "1 GiB") + " kivi4",
            summarize({static_cast<double>(under10(t1_k4, mib))}), summarize({static_cast<double>(under10(t1_q8, mib))}),
            true};
      r.baseline = "uniform q8_0";
      report.rows.push_back(std::move(r));
    }
    per_n.back()["sessions_under_10ms_t1"] = sessions;
    const double restore_ms = summarize(t1.restore).mean;
    std::fprintf(stderr, "llmd-bench:   TTFT T1 %.1f ms, T2 %.1f ms, re-prefill %.1f ms; restore T1 %.2f ms, "
                         "llama-server %.2f ms; sessions under 10 ms: %s\n",
                 summarize(t1.ttft).mean, summarize(t2.ttft).mean, summarize(re.ttft).mean, restore_ms,
                 summarize(ls).mean, sessions.dump().c_str());
  }
  ctx[shape] = per_n;
  return {};
}

}  // namespace

Status run_switch_scenario(const BenchEnv& env, Report& report) {
  json ctx = json::object();
  LLMD_TRY_STATUS(run_model(env, "smollm2-135m", report, ctx));
  if (const char* big = std::getenv("LLMD_BENCH_BIG"); big != nullptr && std::strcmp(big, "1") == 0) {
    LLMD_TRY_STATUS(run_model(env, "llama-3.2-1b", report, ctx));
  }
  report.context["switch"] = ctx;
  return {};
}

}  // namespace llmd::bench
