// Scenario "fair" (see scenario_fair.h).
#include "bench/scenario_fair.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/cpu_load.h"
#include "bench/llama_bench.h"
#include "bench/llmd_process.h"
#include "tools/http_client/http_client.h"

namespace llmd::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kBatch = 512;

// llama-server on a Unix socket, started as in scenario "switch"; SIGTERM on destruction.
class LlamaServer {
 public:
  ~LlamaServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  Status start(const BenchEnv& env, const std::string& model, int slots, int ctx) {
    dir_ = fs::temp_directory_path() / ("llmd-bench-fair-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    socket_ = (dir_ / "ls.sock").string();
    pid_ = ::fork();
    if (pid_ < 0) return errno_error(errno, "fork");
    if (pid_ == 0) {
      std::freopen(env.log_path.c_str(), "a", stderr);
      std::freopen(env.log_path.c_str(), "a", stdout);
      const std::string bin = env.tools_dir + "/llama-server", t = std::to_string(env.threads),
                        np = std::to_string(slots), c = std::to_string(ctx), b = std::to_string(kBatch);
      ::execl(bin.c_str(), "llama-server", "-m", model.c_str(), "-c", c.c_str(), "-np", np.c_str(), "-t", t.c_str(),
              "-tb", t.c_str(), "-b", b.c_str(), "-ub", b.c_str(), "-fa", "auto", "--host", socket_.c_str(),
              "--no-webui", static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 600; ++i) {
      client::HttpClient c(socket_);
      if (auto r = c.request("GET", "/health"); r && r->status == 200) return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Error(Errc::internal, "llama-server did not come up; see " + env.log_path);
  }
  const std::string& socket() const { return socket_; }
  pid_t pid() const { return pid_; }

 private:
  fs::path dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

enum class Server { llmd_fair, llmd_fifo, llama_server };
const char* name_of(Server s) {
  return s == Server::llmd_fair ? "llmd fair" : s == Server::llmd_fifo ? "llmd fifo" : "llama-server";
}

struct Shape {
  int prompt_words = 0;
  int max_tokens = 0;
};

// What one client has been served so far, updated by its threads as tokens arrive.
struct ClientStats {
  std::atomic<std::int64_t> service{0};    // 1 per prompt token + 2 per generated token
  std::atomic<std::int64_t> generated{0};  // generated tokens
  std::atomic<std::int64_t> completed{0}, errors{0};
  std::mutex mu;
  std::vector<std::pair<Clock::time_point, double>> ttft;  // (request sent, ms to its first token)
  std::vector<std::pair<Clock::time_point, double>> e2e;   // (request sent, ms to its end)
  std::string last_error;
};

struct Load {
  std::string socket;
  pid_t pid = -1;  // the server's
  bool llmd = false;
  std::vector<Shape> shapes;  // per client
  int outstanding = 1;        // requests each client keeps in flight
  std::vector<int> depth;     // per client, instead of `outstanding` (closed loops: each thread
                              // sends, waits for the whole answer, sends the next)
};

json request_body(const Load& load, int client, const std::string& prompt, int max_tokens, bool stream) {
  json b = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true},
            {"stream", stream}};
  if (load.llmd) {
    b["app"] = "c" + std::to_string(client);
    b["priority"] = "interactive";
  }
  return b;
}

// One streamed request of `client`; its service grows as tokens arrive (the prompt's tokens when
// the first one does, `prompt_tokens` being the calibrated count) and is set exact from "usage".
void one_request(const Load& load, int client, int prompt_tokens, std::uint64_t seed, const std::atomic<bool>& stop,
                 ClientStats& st) {
  const Shape& sh = load.shapes[client];
  const std::string body = request_body(load, client, words(sh.prompt_words, seed), sh.max_tokens, true).dump();
  const auto t0 = Clock::now();
  bool first = false, done = false;
  std::int64_t counted = 0, streamed = 0;
  std::string error;
  client::HttpClient http(load.socket, &stop);
  auto r = http.request("POST", "/v1/completions", body, [&](const std::string& data) {
    if (data == "[DONE]") return true;
    auto ev = json::parse(data, nullptr, false);
    if (!ev.is_object()) return true;
    if (ev.contains("error")) error = ev["error"].dump();
    if (ev.contains("choices") && ev["choices"].is_array() && !ev["choices"].empty()) {
      const json& ch = ev["choices"][0];
      if (ch.contains("text") && ch["text"].is_string() && !ch["text"].get_ref<const std::string&>().empty()) {
        if (!first) {
          first = true;
          const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          std::lock_guard lock(st.mu);
          st.ttft.emplace_back(t0, ms);
          st.service += prompt_tokens;
          counted += prompt_tokens;
        }
        st.service += 2;
        st.generated += 1;
        counted += 2;
        ++streamed;
      }
    }
    if (ev.contains("usage") && ev["usage"].is_object()) {
      const std::int64_t p = ev["usage"].value("prompt_tokens", 0), g = ev["usage"].value("completion_tokens", 0);
      st.service += p + 2 * g - counted;
      st.generated += g - streamed;
      done = true;
    }
    return true;
  });
  if (stop) return;  // cut off by the end of the window
  if (!r) error = r.error().message();
  else if (r->status != 200) error = "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 200);
  else if (!done && error.empty()) error = "the stream ended without usage";
  if (error.empty()) {
    ++st.completed;
    std::lock_guard lock(st.mu);
    st.e2e.emplace_back(t0, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    return;
  }
  ++st.errors;
  {
    std::lock_guard lock(st.mu);
    st.last_error = error;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // no busy loop on a failing server
}

// Prompt tokens of each client's shape, from one non-streamed request each (also a warm-up).
Result<std::vector<int>> calibrate(const Load& load) {
  std::vector<int> out;
  for (int i = 0; i < static_cast<int>(load.shapes.size()); ++i) {
    client::HttpClient c(load.socket);
    auto r = c.request("POST", "/v1/completions",
                       request_body(load, i, words(load.shapes[i].prompt_words, 7 + i), 1, false).dump());
    if (!r) return r.error();
    auto j = json::parse(r->body, nullptr, false);
    if (r->status != 200 || !j.is_object() || !j.contains("usage")) {
      return Error(Errc::internal,
                   "calibration request -> " + std::to_string(r->status) + ": " + r->body.substr(0, 300));
    }
    out.push_back(j["usage"].value("prompt_tokens", 0));
  }
  return out;
}

struct Snapshot {
  std::vector<std::int64_t> service, generated, completed, errors;
  std::map<std::string, double> daemon_service;  // app -> the scheduler's "service"
  std::int64_t preemptions = 0;
  double park_ms = 0;
};

Snapshot snapshot(const Load& load, std::vector<std::unique_ptr<ClientStats>>& stats) {
  Snapshot s;
  for (auto& c : stats) {
    s.service.push_back(c->service);
    s.generated.push_back(c->generated);
    s.completed.push_back(c->completed);
    s.errors.push_back(c->errors);
  }
  if (!load.llmd) return s;
  client::HttpClient c(load.socket);
  auto r = c.request("GET", "/v1/status");
  auto j = r ? json::parse(r->body, nullptr, false) : json();
  if (!j.is_object() || !j.contains("scheduler")) return s;
  s.preemptions = j["scheduler"].value("preemptions", std::int64_t{0});
  s.park_ms = j["scheduler"].value("park_ms", 0.0);
  const bool show = std::getenv("LLMD_BENCH_FAIR_SHOW") != nullptr;  // llmd's own view, for diagnosis
  for (const auto& cl : j["scheduler"].value("clients", json::array())) {
    if (cl.contains("app") && cl["app"].is_string()) s.daemon_service[cl["app"]] = cl.value("service", 0.0);
    if (show) std::fprintf(stderr, "llmd-bench: fair: llmd's client %s\n", cl.dump().c_str());
  }
  if (show) std::fprintf(stderr, "llmd-bench: fair: llmd's counters %s\n", j.value("counters", json()).dump().c_str());
  return s;
}

struct RunResult {
  std::vector<double> service;         // per client, client side, in the window
  std::vector<double> daemon_service;  // per client, llmd's /v1/status, same window (llmd only)
  std::vector<double> gen;             // per client: generated tokens in the window (client side)
  std::vector<std::vector<double>> ttft;  // per client: requests sent in the window, first token in it
  std::vector<std::vector<double>> e2e;   // per client: requests sent in the window, ended in it
  std::int64_t generated = 0, completed = 0, errors = 0, preemptions = 0;
  double park_ms = 0;  // engine time spent parking preempted generations (llmd)
  double seconds = 0;
  double other_cpus = 0;  // CPUs' worth of time other processes used during the window
  std::string last_error;
};

// Runs the load: calibration, warm-up, then the measured window; every request still in flight at
// its end is cut off (the client hangs up).
Result<RunResult> run_load(const Load& load, double warmup_s, double window_s) {
  auto prompt_tokens = calibrate(load);
  if (!prompt_tokens) return prompt_tokens.error();
  const int n = static_cast<int>(load.shapes.size());
  std::vector<std::unique_ptr<ClientStats>> stats;
  for (int i = 0; i < n; ++i) stats.push_back(std::make_unique<ClientStats>());
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    const int depth = load.depth.empty() ? load.outstanding : load.depth[i];
    for (int k = 0; k < depth; ++k) {
      threads.emplace_back([&, i, k] {
        for (std::uint64_t seq = 0; !stop; ++seq) {
          one_request(load, i, (*prompt_tokens)[i], (std::uint64_t(i) << 40) ^ (std::uint64_t(k) << 32) ^ seq, stop,
                      *stats[i]);
        }
      });
    }
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
  const auto t0 = Clock::now();
  const CpuMark cpu = cpu_mark(load.pid);
  const Snapshot a = snapshot(load, stats);
  std::this_thread::sleep_for(std::chrono::duration<double>(window_s));
  const Snapshot b = snapshot(load, stats);
  const auto t1 = Clock::now();
  const double others = other_cpus(cpu, load.pid);
  stop = true;
  for (auto& t : threads) t.join();

  RunResult out;
  out.seconds = std::chrono::duration<double>(t1 - t0).count();
  out.other_cpus = others;
  out.preemptions = b.preemptions - a.preemptions;
  out.park_ms = b.park_ms - a.park_ms;
  for (int i = 0; i < n; ++i) {
    out.service.push_back(static_cast<double>(b.service[i] - a.service[i]));
    out.generated += b.generated[i] - a.generated[i];
    out.gen.push_back(static_cast<double>(b.generated[i] - a.generated[i]));
    out.completed += b.completed[i] - a.completed[i];
    out.errors += b.errors[i] - a.errors[i];
    std::string app = "c";
    app += std::to_string(i);
    if (load.llmd) {
      const auto before = a.daemon_service.find(app), after = b.daemon_service.find(app);
      out.daemon_service.push_back(after == b.daemon_service.end()
                                       ? -1.0
                                       : after->second - (before == a.daemon_service.end() ? 0.0 : before->second));
    }
    std::vector<double> ttft;
    for (const auto& [sent, ms] : stats[i]->ttft) {
      if (sent >= t0 && sent + std::chrono::duration<double, std::milli>(ms) <= t1) ttft.push_back(ms);
    }
    out.ttft.push_back(std::move(ttft));
    std::vector<double> e2e;
    for (const auto& [sent, ms] : stats[i]->e2e) {
      if (sent >= t0 && sent + std::chrono::duration<double, std::milli>(ms) <= t1) e2e.push_back(ms);
    }
    out.e2e.push_back(std::move(e2e));
    if (!stats[i]->last_error.empty()) out.last_error = app.append(": ").append(stats[i]->last_error);
  }
  return out;
}

// Starts the server, runs the load on it, stops it.
Result<RunResult> run_server(const BenchEnv& env, const std::string& model, Server s, int slots, int ctx,
                             Load load, double warmup_s, double window_s) {
  // The machine may be shared: wait (up to 2 minutes) until other processes use less than
  // LLMD_BENCH_FAIR_QUIET CPUs (default 0.25).
  wait_for_quiet("LLMD_BENCH_FAIR_QUIET", 120, "fair");
  LlmdProcess llmd;
  LlamaServer ls;
  if (s == Server::llama_server) {
    LLMD_TRY_STATUS(ls.start(env, model, slots, ctx));
    load.socket = ls.socket();
    load.pid = ls.pid();
  } else {
    std::vector<std::string> args = {"--parallel", std::to_string(slots), "--slots", std::to_string(std::max(slots, 16)),
                                     "--ctx", std::to_string(ctx), "--batch", std::to_string(kBatch), "--scheduler",
                                     s == Server::llmd_fair ? "fair" : "fifo"};
    // More llmd options for an experiment (space-separated), e.g. "--prefill-chunk 256".
    if (const char* more = std::getenv("LLMD_BENCH_FAIR_LLMD_ARGS")) {
      std::istringstream in(more);
      for (std::string a; in >> a;) args.push_back(a);
    }
    LLMD_TRY_STATUS(llmd.start(env, model, args));
    load.socket = llmd.socket();
    load.pid = llmd.pid();
    load.llmd = true;
  }
  return run_load(load, warmup_s, window_s);
}

double jain(const std::vector<double>& x) {
  double s = 0, q = 0;
  for (double v : x) s += v, q += v * v;
  return q > 0 ? s * s / (static_cast<double>(x.size()) * q) : 0.0;
}

double spread(const std::vector<double>& x) {
  if (x.empty()) return 0.0;
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  return *hi - *lo;
}

double sum(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return s;
}

std::string list(const std::vector<double>& x) {
  std::string s;
  for (double v : x) {
    if (!s.empty()) s += ' ';
    s += std::to_string(static_cast<long long>(v));
  }
  return s;
}

void warn_errors(const char* what, const RunResult& r) {
  if (r.other_cpus > 0.25) {
    std::fprintf(stderr, "llmd-bench: fair: %s: other processes used %.1f CPUs during the window; its numbers "
                         "are not comparable\n", what, r.other_cpus);
  }
  if (r.errors > 0) {
    std::fprintf(stderr, "llmd-bench: fair: %s: %lld failed requests in the window, last: %s\n", what,
                 static_cast<long long>(r.errors), r.last_error.c_str());
  }
}

Status fairness(const BenchEnv& env, const std::string& model, double warmup_s, double window_s, Report& report,
                json& ctx, std::string& table) {
  constexpr int kSlots = 2, kCtx = 2048, kOutstanding = 3;
  const Shape long_shape{400, 128}, short_shape{20, 16};
  for (int n : {2, 4}) {
    Load load;
    load.outstanding = kOutstanding;
    load.shapes.assign(n, short_shape);
    load.shapes[0] = long_shape;
    std::map<Server, RunResult> res;
    for (Server s : {Server::llmd_fair, Server::llmd_fifo, Server::llama_server}) {
      std::fprintf(stderr, "llmd-bench: fair: %d clients, %s, %.0f s\n", n, name_of(s), window_s);
      auto r = run_server(env, model, s, kSlots, kCtx, load, warmup_s, window_s);
      if (!r) return r.error();
      warn_errors(name_of(s), *r);
      res[s] = std::move(*r);
    }
    const std::string tag = std::to_string(n) + " clients ";
    auto row = [&](const std::string& metric, double ours, Server base, double theirs, bool higher) {
      Row r{"fair", tag + metric, summarize({ours}), summarize({theirs}), higher};
      r.baseline = name_of(base);
      report.rows.push_back(std::move(r));
    };
    const RunResult& fair = res[Server::llmd_fair];
    for (Server base : {Server::llmd_fifo, Server::llama_server}) {
      row("Jain index", jain(fair.service), base, jain(res[base].service), true);
      row("max service diff", spread(fair.service), base, spread(res[base].service), false);
      row("weighted tok/s, sum", sum(fair.service) / fair.seconds, base, sum(res[base].service) / res[base].seconds,
          true);
    }
    json runs = json::object();
    for (auto& [s, r] : res) {
      std::vector<double> short_ttft;
      for (int i = 1; i < n; ++i) short_ttft.insert(short_ttft.end(), r.ttft[i].begin(), r.ttft[i].end());
      const bool ours = !r.daemon_service.empty();
      char theirs[16] = "     -", line[512];
      if (ours) std::snprintf(theirs, sizeof theirs, "%6.3f", jain(r.daemon_service));
      std::snprintf(line, sizeof line, "%7d  %-12s  %6.3f  %6s  %8.0f  %7.0f  %10.0f  %5lld  %6lld  %5.1f  %s",
                    n, name_of(s), jain(r.service), theirs, spread(r.service),
                    sum(r.service) / r.seconds, percentile(short_ttft, 50), static_cast<long long>(r.preemptions),
                    static_cast<long long>(r.errors), r.other_cpus, list(r.service).c_str());
      table += line;
      table += ours ? "  (llmd's: " + list(r.daemon_service) + ")\n" : "\n";
      runs[name_of(s)] = {{"service", r.service}, {"daemon_service", r.daemon_service}, {"jain", jain(r.service)},
                          {"daemon_jain", r.daemon_service.empty() ? json(nullptr) : json(jain(r.daemon_service))},
                          {"max_diff", spread(r.service)}, {"seconds", r.seconds}, {"completed", r.completed},
                          {"errors", r.errors}, {"preemptions", r.preemptions}, {"other_cpus", r.other_cpus},
                          {"short_ttft_p50_ms", percentile(short_ttft, 50)},
                          {"long_ttft_p50_ms", percentile(r.ttft[0], 50)}};
    }
    ctx["fairness"][std::to_string(n) + "_clients"] = runs;
  }
  return {};
}

Status throughput(const BenchEnv& env, const std::string& model, double warmup_s, double window_s, Report& report,
                  json& ctx, std::string& table) {
  constexpr int kClients = 8, kCtx = 4096;
  Load load;
  load.outstanding = 1;
  load.shapes.assign(kClients, Shape{64, 64});
  std::map<Server, RunResult> res;
  for (Server s : {Server::llmd_fair, Server::llama_server}) {
    std::fprintf(stderr, "llmd-bench: fair: throughput, %d clients, %s, %.0f s\n", kClients, name_of(s), window_s);
    auto r = run_server(env, model, s, kClients, kCtx, load, warmup_s, window_s);
    if (!r) return r.error();
    warn_errors(name_of(s), *r);
    res[s] = std::move(*r);
  }
  auto all_ttft = [](const RunResult& r) {
    std::vector<double> v;
    for (const auto& t : r.ttft) v.insert(v.end(), t.begin(), t.end());
    return v;
  };
  const RunResult &ours = res[Server::llmd_fair], &theirs = res[Server::llama_server];
  const std::vector<double> ttft_ours = all_ttft(ours), ttft_theirs = all_ttft(theirs);
  auto row = [&](const std::string& metric, double a, double b, bool higher) {
    Row r{"fair", "8 clients " + metric, summarize({a}), summarize({b}), higher};
    r.baseline = "llama-server";
    report.rows.push_back(std::move(r));
  };
  row("gen tok/s", ours.generated / ours.seconds, theirs.generated / theirs.seconds, true);
  row("TTFT p50 ms", percentile(ttft_ours, 50), percentile(ttft_theirs, 50), false);
  row("TTFT p99 ms", percentile(ttft_ours, 99), percentile(ttft_theirs, 99), false);
  json runs = json::object();
  for (auto& [s, r] : res) {
    std::vector<double> p50, p99;
    for (const auto& t : r.ttft) p50.push_back(percentile(t, 50)), p99.push_back(percentile(t, 99));
    char line[512];
    std::snprintf(line, sizeof line,
                  "  %-12s  %6.1f gen tok/s  %4lld done  %lld errors  other CPUs %.1f; TTFT p50 per client: %s; "
                  "p99: %s\n",
                  name_of(s), r.generated / r.seconds, static_cast<long long>(r.completed),
                  static_cast<long long>(r.errors), r.other_cpus, list(p50).c_str(), list(p99).c_str());
    table += line;
    runs[name_of(s)] = {{"gen_tok_s", r.generated / r.seconds}, {"completed", r.completed}, {"errors", r.errors},
                        {"other_cpus", r.other_cpus},
                        {"ttft_p50_ms", percentile(all_ttft(r), 50)}, {"ttft_p99_ms", percentile(all_ttft(r), 99)},
                        {"ttft_p50_ms_per_client", p50}, {"ttft_p99_ms_per_client", p99}};
  }
  ctx["throughput"] = runs;
  return {};
}

// The pattern real apps produce: uid A floods (6 requests outstanding, 300 words in, 96 tokens
// out) while B, an interactive app, runs 2 closed-loop threads (20 words in, 32 out: send, wait
// for the whole answer, send the next). B alone first, then beside A, on each server.
Status interactive(const BenchEnv& env, const std::string& model, double warmup_s, double window_s, Report& report,
                   json& ctx, std::string& table) {
  constexpr int kCtx = 4096;
  const Shape flood{300, 96}, chat{20, 32};
  // What a prompt token and a generated token cost on this machine (llama-bench pp256 and tg32, one
  // stream): the weighted total (1 and 2) favours prompt-heavy work, a prompt token costing about
  // a fifth of a generated one here, so the total is also reported in engine-seconds of work per
  // second.
  auto pp = llama_bench(env, model, {"-p", "256", "-n", "0"});
  if (!pp) return pp.error();
  auto tg = llama_bench(env, model, {"-p", "0", "-n", "32"});
  if (!tg) return tg.error();
  const double pp_rate = percentile(bench_samples((*pp)[0]), 50), tg_rate = percentile(bench_samples((*tg)[0]), 50);
  if (pp_rate <= 0 || tg_rate <= 0) return Error(Errc::internal, "llama-bench reported no pp256/tg32 rate");
  ctx["interactive"]["cost"] = {{"pp256_tok_s", pp_rate}, {"tg32_tok_s", tg_rate}};
  const int only = static_cast<int>(env_number("LLMD_BENCH_FAIR_INTERACTIVE_SLOTS", 0));  // 0: 2 and 4
  for (int slots : {2, 4}) {
    if (only != 0 && slots != only) continue;
    std::map<Server, RunResult> alone, both;
    for (Server s : {Server::llmd_fair, Server::llmd_fifo, Server::llama_server}) {
      Load a;
      a.shapes = {chat};
      a.depth = {2};
      std::fprintf(stderr, "llmd-bench: fair: interactive, %d slots, %s, B alone, %.0f s\n", slots, name_of(s), window_s);
      auto ra = run_server(env, model, s, slots, kCtx, a, warmup_s, window_s);
      if (!ra) return ra.error();
      warn_errors(name_of(s), *ra);
      Load b;
      b.shapes = {flood, chat};
      b.depth = {6, 2};
      std::fprintf(stderr, "llmd-bench: fair: interactive, %d slots, %s, A flood + B, %.0f s\n", slots, name_of(s),
                   window_s);
      auto rb = run_server(env, model, s, slots, kCtx, b, warmup_s, window_s);
      if (!rb) return rb.error();
      warn_errors(name_of(s), *rb);
      alone[s] = std::move(*ra);
      both[s] = std::move(*rb);
    }
    struct Numbers {
      double share = 0, p50 = 0, p99 = 0, p50_alone = 0, p99_alone = 0, a_rate = 0, total = 0, preempt_s = 0,
             park_ms = 0, work = 0;
    };
    auto numbers = [&](Server s) {
      const RunResult &ra = alone[s], &rb = both[s];
      Numbers n;
      const double b_alone = ra.service[0] / ra.seconds, b_rate = rb.service[1] / rb.seconds;
      n.total = (rb.service[0] + rb.service[1]) / rb.seconds;
      // Engine-seconds of single-stream work done per second: prompt tokens / pp + generated / tg.
      for (std::size_t i = 0; i < rb.gen.size(); ++i) {
        n.work += ((rb.service[i] - 2 * rb.gen[i]) / pp_rate + rb.gen[i] / tg_rate) / rb.seconds;
      }
      n.share = b_rate / std::max(1e-9, std::min(b_alone, n.total / 2));
      n.p50 = percentile(rb.e2e[1], 50), n.p99 = percentile(rb.e2e[1], 99);
      n.p50_alone = percentile(ra.e2e[0], 50), n.p99_alone = percentile(ra.e2e[0], 99);
      n.a_rate = rb.service[0] / rb.seconds;
      n.preempt_s = static_cast<double>(rb.preemptions) / rb.seconds;
      n.park_ms = rb.preemptions > 0 ? rb.park_ms / static_cast<double>(rb.preemptions) : 0;
      return n;
    };
    const Numbers fair = numbers(Server::llmd_fair), fifo = numbers(Server::llmd_fifo);
    const std::string tag = "interactive " + std::to_string(slots) + " slots ";
    auto row = [&](const std::string& metric, double ours, Server base, double theirs, bool higher) {
      Row r{"fair", tag + metric, summarize({ours}), summarize({theirs}), higher};
      r.baseline = name_of(base);
      report.rows.push_back(std::move(r));
    };
    for (Server base : {Server::llmd_fifo, Server::llama_server}) {
      const Numbers other = numbers(base);
      row("B share of min(demand, half)", fair.share, base, other.share, true);
      row("B e2e p50 / alone", fair.p50 / std::max(1e-9, fair.p50_alone), base,
          other.p50 / std::max(1e-9, other.p50_alone), false);
      row("B e2e p99 / alone", fair.p99 / std::max(1e-9, fair.p99_alone), base,
          other.p99 / std::max(1e-9, other.p99_alone), false);
      row("weighted tok/s, sum", fair.total, base, other.total, true);
      row("work done, engine-s/s", fair.work, base, other.work, true);
    }
    json runs = json::object();
    for (Server s : {Server::llmd_fair, Server::llmd_fifo, Server::llama_server}) {
      const Numbers n = numbers(s);
      char line[512];
      std::snprintf(line, sizeof line,
                    "%5d  %-12s  %5.2f  %6.0f  %6.0f  %4.2fx  %6.0f  %6.0f  %4.2fx  %7.0f  %7.0f  %5.3fx  %5.2f  %5.3fx  "
                    "%5.1f  %6.1f  %lld  %s\n",
                    slots, name_of(s), n.share, n.p50_alone, n.p50, n.p50 / std::max(1e-9, n.p50_alone), n.p99_alone,
                    n.p99, n.p99 / std::max(1e-9, n.p99_alone), n.a_rate, n.total,
                    n.total / std::max(1e-9, fifo.total), n.work, n.work / std::max(1e-9, fifo.work), n.preempt_s,
                    n.park_ms,
                    static_cast<long long>(alone[s].errors + both[s].errors),
                    both[s].daemon_service.empty() ? "" : ("(llmd's A B: " + list(both[s].daemon_service) + ")").c_str());
      table += line;
      runs[name_of(s)] = {{"b_share", n.share}, {"b_e2e_p50_ms", n.p50}, {"b_e2e_p99_ms", n.p99},
                          {"b_alone_e2e_p50_ms", n.p50_alone}, {"b_alone_e2e_p99_ms", n.p99_alone},
                          {"a_wtok_s", n.a_rate}, {"total_wtok_s", n.total}, {"work_engine_s_per_s", n.work},
                          {"preemptions_s", n.preempt_s},
                          {"park_ms_per_preemption", n.park_ms}, {"b_completed", both[s].e2e[1].size()},
                          {"b_alone_completed", alone[s].e2e[0].size()}, {"other_cpus", both[s].other_cpus}};
    }
    ctx["interactive"][std::to_string(slots) + "_slots"] = runs;
  }
  return {};
}

}  // namespace

Status run_fair_scenario(const BenchEnv& env, Report& report) {
  auto model = ensure_model(env, "smollm2-135m", "q8_0");
  if (!model) return model.error();
  const double window = env_number("LLMD_BENCH_FAIR_WINDOW", 25), warmup = env_number("LLMD_BENCH_FAIR_WARMUP", 4);
  json ctx = {{"model", *model}, {"window_s", window}, {"warmup_s", warmup}, {"batch", kBatch},
              {"service", "client side: 1 per prompt token + 2 per generated token, in the window"}};
  std::string fair_table, tput_table, inter_table;
  if (env_number("LLMD_BENCH_FAIR_ONLY_INTERACTIVE", 0) == 0) {
    LLMD_TRY_STATUS(fairness(env, *model, warmup, window, report, ctx, fair_table));
  }
  LLMD_TRY_STATUS(interactive(env, *model, warmup, window * 0.8, report, ctx, inter_table));
  if (env_number("LLMD_BENCH_FAIR_ONLY_INTERACTIVE", 0) == 0) {
    LLMD_TRY_STATUS(throughput(env, *model, warmup, window * 0.8, report, ctx, tput_table));
  }
  std::printf("\nfair: per-client service (1*prompt + 2*generated tokens, client side) in %.0f s, 2 slots, "
              "c0 long (400+128), others short (20+16), 3 requests outstanding each\n"
              "(llmd's: /v1/status; short TTFT: p50 ms of c1..cN; other CPU: CPUs used by other processes)\n"
              "%7s  %-12s  %6s  %6s  %8s  %7s  %10s  %5s  %6s  %5s  %s\n",
              window, "clients", "server", "Jain", "llmd's", "max diff", "wtok/s", "short TTFT", "preem", "errors",
              "other", "service per client c0..cN");
  std::printf("%s\nfair: throughput, 8 clients x 1 request (64+64), 8 slots, %.0f s\n%s", fair_table.c_str(),
              window * 0.8, tput_table.c_str());
  std::printf("\nfair: interactive beside a flood, %.0f s each: A 6 outstanding (300 words + 96 tokens), B 2 "
              "closed-loop threads (20 words + 32 tokens); B alone first\n"
              "(share: B's service / min(B alone, half the total); e2e ms of B's requests; A and total: weighted "
              "tok/s; vs fifo: total / llmd fifo's; work: engine-seconds of work done per second, a prompt token "
              "costing 1/pp256 s and a generated one 1/tg32 s of llama-bench, and vs fifo; preem/s and ms of "
              "engine time per preemption)\n"
              "%5s  %-12s  %5s  %6s  %6s  %5s  %6s  %6s  %5s  %7s  %7s  %6s  %5s  %6s  %5s  %6s  %s\n%s",
              window * 0.8, "slots", "server", "share", "p50 1", "p50", "x", "p99 1", "p99", "x", "A", "total",
              "vs fifo", "work", "vs fifo", "pre/s", "ms/pre", "errors", inter_table.c_str());
  report.context["fair"] = ctx;
  return {};
}

}  // namespace llmd::bench
