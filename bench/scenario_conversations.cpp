// Scenario "conversations" (see scenario_conversations.h).
#include "bench/scenario_conversations.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/cpu_load.h"
#include "bench/llama_server_process.h"
#include "bench/llmd_process.h"
#include "tools/http_client/http_client.h"

namespace llmd::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kSlots = 2;
constexpr int kCtx = 4096;         // llmd's --ctx (its default): the longest session; llama-server per slot
constexpr int kFirstWords = 990;   // the first message: ~1,000 tokens with the chat template
constexpr int kTurnWords = 8;      // every later user message
constexpr int kMaxTokens = 8;      // every answer (ignore_eos: always 8)
constexpr int kDefaultThreads = 2;  // issue 15's setup, unless --threads is given

enum class Kind { sessions, stateless, llama_server };
const Kind kKinds[] = {Kind::sessions, Kind::stateless, Kind::llama_server};

const char* label(Kind k) {
  return k == Kind::sessions ? "(a) llmd sessions" : k == Kind::stateless ? "(b) llmd stateless" : "(c) llama-server";
}
const char* key(Kind k) { return k == Kind::sessions ? "a" : k == Kind::stateless ? "b" : "c"; }

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::vector<std::string> split_env(const char* name) {
  std::vector<std::string> out;
  if (const char* v = std::getenv(name)) {
    std::istringstream in(v);
    for (std::string w; in >> w;) out.push_back(w);
  }
  return out;
}

// What the user says in conversation `c` at turn `t`: real words from a fixed seed.
std::string user_text(int c, int t) {
  const std::uint64_t seed = 0x15C0'0000ull + static_cast<std::uint64_t>(c) * 1000 + static_cast<std::uint64_t>(t);
  return words(t == 0 ? kFirstWords : kTurnWords, seed);
}

struct Conversation {
  std::string session;                 // (a)
  json messages = json::array();       // (b), (c): the whole history, resent every turn
};

// Every turn of one phase.
struct Phase {
  std::vector<double> ttft, prompt, cached;
  std::vector<double> loaded, recomputed;  // llmd's extensions: history from KV chunks, history recomputed
  int no_content = 0;  // answers whose 8 tokens had no text (TTFT taken at the end)
};

struct Footprint {
  std::uint64_t rss = 0;        // the server's resident memory
  std::uint64_t state = 0;      // llmd: bytes of files under its state directory
  std::uint64_t kv_ram = 0, kv_disk = 0;  // llmd: /v1/status kv.ram.bytes, kv.disk.bytes
};

struct ServerResult {
  Phase first, steady, restart, after;
  Footprint base, held, after_restart;
  double settle_ms = 0;      // waiting for llmd's write-backs before the kill
  double start_ms = 0;       // the restart, until the server answers
  double other_cpus = 0;     // other processes' CPU use while the rounds ran (the larger of both halves)
};

std::uint64_t rss_bytes(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

std::uint64_t dir_bytes(const fs::path& dir) {
  std::uint64_t n = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2)) n += it->file_size(e2);
  }
  return n;
}

Result<json> get_json(const std::string& socket, const std::string& path) {
  client::HttpClient c(socket);
  auto r = c.request("GET", path);
  if (!r) return r.error();
  auto j = json::parse(r->body, nullptr, false);
  if (r->status != 200 || j.is_discarded()) {
    return Error(Errc::internal, "GET " + path + " -> " + std::to_string(r->status) + ": " + r->body.substr(0, 300));
  }
  return j;
}

// The server under test: llmd (a, b) or llama-server (c).
class Server {
 public:
  Server(const BenchEnv& env, std::string model, Kind kind) : env_(env), model_(std::move(model)), kind_(kind) {}

  Status start(bool keep_state) {
    if (kind_ == Kind::llama_server) {
      std::vector<std::string> args = {"-np", std::to_string(kSlots), "-c", std::to_string(kCtx * kSlots)};
      for (auto& a : split_env("LLMD_BENCH_CONV_LS_ARGS")) args.push_back(a);
      return ls_.start(env_, model_, args);
    }
    std::vector<std::string> args = {"--slots", std::to_string(kSlots), "--ctx", std::to_string(kCtx)};
    for (auto& a : split_env("LLMD_BENCH_CONV_ARGS")) args.push_back(a);
    return llmd_.start(env_, model_, args, keep_state);
  }
  void kill_hard() { kind_ == Kind::llama_server ? ls_.kill_hard() : llmd_.kill_hard(); }
  const std::string& socket() const { return kind_ == Kind::llama_server ? ls_.socket() : llmd_.socket(); }
  pid_t pid() const { return kind_ == Kind::llama_server ? ls_.pid() : llmd_.pid(); }
  bool llmd() const { return kind_ != Kind::llama_server; }

  Footprint footprint() const {
    Footprint f;
    f.rss = rss_bytes(pid());
    if (!llmd()) return f;
    f.state = dir_bytes(llmd_.state_dir());
    if (auto s = get_json(socket(), "/v1/status"); s && (*s).contains("kv") && (*s)["kv"].contains("ram")) {
      f.kv_ram = (*s)["kv"]["ram"].value("bytes", std::uint64_t{0});
      f.kv_disk = (*s)["kv"]["disk"].value("bytes", std::uint64_t{0});
    }
    return f;
  }

  // llmd writes chunks back to disk in the background: before a kill, wait (up to 30 s) until none
  // is pending, as after a conversation left idle. Returns the milliseconds waited.
  double settle() const {
    const auto t0 = Clock::now();
    if (!llmd()) return 0;
    for (int i = 0; i < 300; ++i) {
      auto s = get_json(socket(), "/v1/status");
      if (!s) break;
      const json& kv = (*s).value("kv", json::object());
      const json& q = (*s).value("queue", json::object());
      if (kv.value("pending_write_backs", 0) == 0 && q.value("in_flight", 0) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return ms_since(t0);
  }

 private:
  const BenchEnv& env_;
  std::string model_;
  Kind kind_;
  LlmdProcess llmd_;
  LlamaServerProcess ls_;
};

// One streamed turn of conversation `c`; the client's time to the first content byte, and the
// prompt and cached tokens the server reported.
Status turn(const Server& server, Kind kind, Conversation& c, const std::string& text, Phase& into) {
  json body = {{"max_tokens", kMaxTokens}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true}};
  std::string target;
  if (kind == Kind::sessions) {
    body["content"] = text;
    target = "/v1/sessions/" + c.session + "/messages";
  } else {
    c.messages.push_back({{"role", "user"}, {"content", text}});
    body["messages"] = c.messages;
    target = "/v1/chat/completions";
  }
  client::HttpClient http(server.socket());
  std::string answer, error;
  json usage, timings;
  double ttft = -1;
  const auto t0 = Clock::now();
  auto r = http.request("POST", target, body.dump(), [&](const std::string& data) {
    if (data == "[DONE]") return true;
    auto ev = json::parse(data, nullptr, false);
    if (!ev.is_object()) return true;
    if (ev.contains("error")) error = ev["error"].dump();
    if (ev.contains("choices") && ev["choices"].is_array() && !ev["choices"].empty()) {
      const json& ch = ev["choices"][0];
      if (ch.contains("delta") && ch["delta"].is_object()) {
        const auto it = ch["delta"].find("content");
        if (it != ch["delta"].end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
          if (ttft < 0) ttft = ms_since(t0);
          answer += it->get<std::string>();
        }
      }
    }
    if (ev.contains("usage") && ev["usage"].is_object()) usage = ev["usage"];
    if (ev.contains("timings") && ev["timings"].is_object()) timings = ev["timings"];
    return true;
  });
  if (!r) return r.error();
  if (r->status != 200 || !error.empty() || (usage.is_null() && timings.is_null())) {
    return Error(Errc::internal, std::string(label(kind)) + ": bad answer to " + target + " (HTTP " +
                                     std::to_string(r->status) + "): " + (error.empty() ? r->body.substr(0, 300) : error));
  }
  if (ttft < 0) {
    ttft = ms_since(t0);
    ++into.no_content;
  }
  if (kind != Kind::sessions) c.messages.push_back({{"role", "assistant"}, {"content", answer}});
  double prompt = 0, cached = 0, loaded = 0, recomputed = 0;
  if (usage.is_object() && usage.contains("prompt_tokens")) {
    prompt = usage.value("prompt_tokens", 0.0);
    loaded = usage.value("loaded_tokens", 0.0);
    recomputed = usage.value("restored_tokens", 0.0);
    cached = usage.contains("prompt_tokens_details") ? usage["prompt_tokens_details"].value("cached_tokens", 0.0)
                                                     : timings.value("cache_n", 0.0);
  } else {  // llama-server streams usage only with stream_options, which (b) does not send
    cached = timings.value("cache_n", 0.0);
    prompt = timings.value("prompt_n", 0.0) + cached;
  }
  into.ttft.push_back(ttft);
  into.prompt.push_back(prompt);
  into.cached.push_back(cached);
  into.loaded.push_back(loaded);
  into.recomputed.push_back(recomputed);
  return {};
}

Status play_round(const Server& server, Kind kind, std::vector<Conversation>& convs, int round, Phase& into) {
  const std::size_t from = into.ttft.size();
  for (std::size_t i = 0; i < convs.size(); ++i) {
    LLMD_TRY_STATUS(turn(server, kind, convs[i], user_text(static_cast<int>(i), round), into));
  }
  const std::vector<double> these(into.ttft.begin() + static_cast<std::ptrdiff_t>(from), into.ttft.end()),
      cached(into.cached.begin() + static_cast<std::ptrdiff_t>(from), into.cached.end());
  std::fprintf(stderr, "llmd-bench: conversations:   round %d: TTFT p50 %.1f ms, max %.1f ms; cached %.0f tokens "
               "(mean)\n", round, percentile(these, 50), percentile(these, 100), summarize(cached).mean);
  return {};
}

Result<ServerResult> run_server(const BenchEnv& env, const std::string& model, Kind kind, int n, int rounds) {
  wait_for_quiet("LLMD_BENCH_CONV_QUIET", 30, "conversations");
  std::fprintf(stderr, "llmd-bench: conversations: %s, %d conversations, %d + %d rounds\n", label(kind), n, rounds,
               rounds);
  Server server(env, model, kind);
  LLMD_TRY_STATUS(server.start(false));
  ServerResult out;
  {
    // A warm-up request (the first decode allocates), then the baseline footprint.
    Conversation warm;
    Phase ignored;
    LLMD_TRY_STATUS(turn(server, Kind::stateless, warm, "Hello there.", ignored));
  }
  out.base = server.footprint();
  std::vector<Conversation> convs(static_cast<std::size_t>(n));
  if (kind == Kind::sessions) {
    for (auto& c : convs) {
      client::HttpClient http(server.socket());
      auto r = http.request("POST", "/v1/sessions", "{}");
      if (!r) return r.error();
      auto j = json::parse(r->body, nullptr, false);
      if (r->status != 201 || !j.is_object() || !j.contains("id")) {
        return Error(Errc::internal, "POST /v1/sessions -> " + std::to_string(r->status) + ": " + r->body.substr(0, 300));
      }
      c.session = j["id"].get<std::string>();
    }
  }
  CpuMark cpu = cpu_mark(server.pid());
  LLMD_TRY_STATUS(play_round(server, kind, convs, 0, out.first));
  for (int r = 1; r <= rounds; ++r) LLMD_TRY_STATUS(play_round(server, kind, convs, r, out.steady));
  out.other_cpus = other_cpus(cpu, server.pid());
  out.settle_ms = server.settle();
  out.held = server.footprint();

  std::fprintf(stderr, "llmd-bench: conversations:   kill -9 and restart (%.0f ms waited for write-backs)\n",
               out.settle_ms);
  server.kill_hard();
  const auto t0 = Clock::now();
  LLMD_TRY_STATUS(server.start(true));
  out.start_ms = ms_since(t0);
  cpu = cpu_mark(server.pid());
  LLMD_TRY_STATUS(play_round(server, kind, convs, rounds + 1, out.restart));
  for (int r = rounds + 2; r <= 2 * rounds; ++r) LLMD_TRY_STATUS(play_round(server, kind, convs, r, out.after));
  out.other_cpus = std::max(out.other_cpus, other_cpus(cpu, server.pid()));
  out.after_restart = server.footprint();
  return out;
}

double mean(const std::vector<double>& v) { return summarize(v).mean; }

double per_conv_mib(std::uint64_t after, std::uint64_t before, int n) {
  return after > before ? static_cast<double>(after - before) / n / (1024.0 * 1024.0) : 0.0;
}

json phase_json(const Phase& p) {
  return {{"ttft_ms", p.ttft},
          {"ttft_p50_ms", percentile(p.ttft, 50)},
          {"ttft_p90_ms", percentile(p.ttft, 90)},
          {"prompt_tokens_mean", mean(p.prompt)},
          {"cached_tokens_mean", mean(p.cached)},
          {"cached_tokens", p.cached},
          {"loaded_tokens_mean", mean(p.loaded)},
          {"recomputed_tokens_mean", mean(p.recomputed)},
          {"answers_without_text", p.no_content}};
}

json footprint_json(const Footprint& f) {
  return {{"rss_bytes", f.rss}, {"state_dir_bytes", f.state}, {"kv_ram_bytes", f.kv_ram}, {"kv_disk_bytes", f.kv_disk}};
}

double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

}  // namespace

Status run_conversations_scenario(const BenchEnv& env_in, Report& report) {
  BenchEnv env = env_in;
  if (!env.threads_given) env.threads = kDefaultThreads;
  const int n = static_cast<int>(env_number("LLMD_BENCH_CONV_N", env.quick ? 4 : 8));
  const int rounds = static_cast<int>(env_number("LLMD_BENCH_CONV_ROUNDS", env.quick ? 2 : 4));
  auto model = ensure_model(env, "smollm2-135m", "q8_0");
  if (!model) return model.error();

  std::map<Kind, ServerResult> res;
  for (Kind k : kKinds) {
    auto r = run_server(env, *model, k, n, rounds);
    if (!r) return r.error();
    res[k] = std::move(*r);
  }
  const ServerResult &a = res[Kind::sessions], &b = res[Kind::stateless], &c = res[Kind::llama_server];

  // The common table: llmd (a or b) against a baseline, lower is better.
  auto row = [&](const std::string& metric, double ours, double theirs, const char* baseline) {
    Row r{"conversations", metric, summarize({ours}), summarize({theirs}), false};
    r.baseline = baseline;
    report.rows.push_back(std::move(r));
  };
  auto p50 = [](const Phase& p) { return percentile(p.ttft, 50); };
  auto p90 = [](const Phase& p) { return percentile(p.ttft, 90); };
  row("(b) steady TTFT p50 ms", p50(b.steady), p50(a.steady), label(Kind::sessions));
  row("(b) steady TTFT p90 ms", p90(b.steady), p90(a.steady), label(Kind::sessions));
  row("(b) steady TTFT p50 ms", p50(b.steady), p50(c.steady), label(Kind::llama_server));
  row("(b) steady TTFT p90 ms", p90(b.steady), p90(c.steady), label(Kind::llama_server));
  row("(a) steady TTFT p50 ms", p50(a.steady), p50(c.steady), label(Kind::llama_server));
  row("(a) restart TTFT p50 ms", p50(a.restart), p50(c.restart), label(Kind::llama_server));
  row("(b) restart TTFT p50 ms", p50(b.restart), p50(c.restart), label(Kind::llama_server));
  row("(a) restart TTFT p90 ms", p90(a.restart), p90(c.restart), label(Kind::llama_server));
  row("(b) restart TTFT p90 ms", p90(b.restart), p90(c.restart), label(Kind::llama_server));
  row("(a) first turn TTFT p50 ms", p50(a.first), p50(c.first), label(Kind::llama_server));
  row("(b) first turn TTFT p50 ms", p50(b.first), p50(c.first), label(Kind::llama_server));

  struct Target {
    const char* name;
    double value;
    double limit;
    bool at_most;
  };
  const Target targets[] = {
      {"(b)/(a) steady TTFT p50", ratio(p50(b.steady), p50(a.steady)), 1.05, true},
      {"(b)/(c) steady TTFT p50", ratio(p50(b.steady), p50(c.steady)), 0.85, true},
      {"(c)/(a) restart TTFT p50", ratio(p50(c.restart), p50(a.restart)), 10.0, false},
      {"(c)/(b) restart TTFT p50", ratio(p50(c.restart), p50(b.restart)), 10.0, false},
      {"(b)/(a) steady TTFT p90", ratio(p90(b.steady), p90(a.steady)), 1.05, true},
      {"(b)/(c) steady TTFT p90", ratio(p90(b.steady), p90(c.steady)), 0.85, true},
      {"(c)/(a) restart TTFT p90", ratio(p90(c.restart), p90(a.restart)), 10.0, false},
      {"(c)/(b) restart TTFT p90", ratio(p90(c.restart), p90(b.restart)), 10.0, false},
  };

  std::printf("\nconversations: %d conversations on %d slots, one request at a time, round-robin: a first message of "
              "%d words (~1,000 tokens), then %d rounds of %d-word turns, %d tokens out (greedy); restart = kill -9 "
              "and start (llmd: same state dir), then %d more rounds. %d threads.\n",
              n, kSlots, kFirstWords, rounds, kTurnWords, kMaxTokens, rounds, env.threads);
  std::printf("ratios (issue 15's targets):\n");
  json tjson = json::object();
  for (const Target& t : targets) {
    const bool met = t.at_most ? t.value <= t.limit : t.value >= t.limit;
    std::printf("  %-26s %8.2f   target %s %.2f   %s\n", t.name, t.value, t.at_most ? "<=" : ">=", t.limit,
                met ? "met" : "MISSED");
    tjson[t.name] = {{"value", t.value}, {"target", (t.at_most ? "<= " : ">= ") + json(t.limit).dump()}, {"met", met}};
  }
  std::printf("\n%-19s  %9s  %10s  %10s  %11s  %11s  %9s  %5s\n", "TTFT ms", "first p50", "steady p50",
              "steady p90", "restart p50", "restart p90", "after p50", "other");
  for (Kind k : kKinds) {
    const ServerResult& r = res[k];
    std::printf("%-19s  %9.1f  %10.1f  %10.1f  %11.1f  %11.1f  %9.1f  %5.2f\n", label(k), p50(r.first), p50(r.steady),
                p90(r.steady), p50(r.restart), p90(r.restart), p50(r.after), r.other_cpus);
  }
  std::printf("\n%-19s  %15s  %15s  %15s  %15s  %9s  %10s  %8s\n", "per turn (mean)", "prompt st./rst.",
              "cached st./rst.", "loaded st./rst.", "recomp st./rst.", "RSS MiB/c", "disk MiB/c", "T1 MiB/c");
  json servers = json::object();
  for (Kind k : kKinds) {
    const ServerResult& r = res[k];
    const double rss = per_conv_mib(r.held.rss, r.base.rss, n), disk = per_conv_mib(r.held.state, r.base.state, n),
                 t1 = per_conv_mib(r.held.kv_ram, r.base.kv_ram, n);
    std::printf("%-19s  %6.0f / %6.0f  %6.0f / %6.0f  %6.0f / %6.0f  %6.0f / %6.0f  %9.2f  %10.2f  %8.2f\n", label(k),
                mean(r.steady.prompt), mean(r.restart.prompt), mean(r.steady.cached), mean(r.restart.cached),
                mean(r.steady.loaded), mean(r.restart.loaded), mean(r.steady.recomputed), mean(r.restart.recomputed),
                rss, disk, t1);
    const int no_text = r.first.no_content + r.steady.no_content + r.restart.no_content + r.after.no_content;
    if (no_text > 0) {
      std::fprintf(stderr, "llmd-bench: conversations: %s: %d answers had no text (TTFT taken at their end)\n",
                   label(k), no_text);
    }
    if (r.other_cpus > 0.25) {
      std::fprintf(stderr, "llmd-bench: conversations: %s: other processes used %.1f CPUs during the rounds; its "
                           "numbers are not comparable\n", label(k), r.other_cpus);
    }
    servers[key(k)] = {{"server", label(k)},
                       {"first", phase_json(r.first)},
                       {"steady", phase_json(r.steady)},
                       {"restart", phase_json(r.restart)},
                       {"after_restart", phase_json(r.after)},
                       {"footprint", {{"base", footprint_json(r.base)},
                                      {"held", footprint_json(r.held)},
                                      {"after_restart", footprint_json(r.after_restart)}}},
                       {"rss_mib_per_conversation", rss},
                       {"disk_mib_per_conversation", disk},
                       {"kv_ram_mib_per_conversation", t1},
                       {"kv_disk_mib_per_conversation", per_conv_mib(r.held.kv_disk, r.base.kv_disk, n)},
                       {"settle_ms", r.settle_ms},
                       {"restart_start_ms", r.start_ms},
                       {"other_cpus", r.other_cpus}};
  }
  std::printf("(TTFT: client side, to the first content byte; first: each conversation's first message; "
              "restart: the first round after kill -9 + start; after: the later rounds; other: CPUs used by other "
              "processes. Tokens: mean per turn as the server reported them, steady / restart round; loaded and "
              "recomp(uted): llmd's loaded_tokens and restored_tokens. MiB/c: growth per conversation from after a "
              "warm-up to the end of the steady rounds)\n");
  report.context["conversations"] = {{"model", *model},
                                     {"conversations", n},
                                     {"rounds", rounds},
                                     {"slots", kSlots},
                                     {"llmd_ctx", kCtx},
                                     {"llama_server_ctx", kCtx * kSlots},
                                     {"first_words", kFirstWords},
                                     {"turn_words", kTurnWords},
                                     {"max_tokens", kMaxTokens},
                                     {"threads", env.threads},
                                     {"llmd_extra_args", split_env("LLMD_BENCH_CONV_ARGS")},
                                     {"llama_server_extra_args", split_env("LLMD_BENCH_CONV_LS_ARGS")},
                                     {"targets", tjson},
                                     {"servers", servers}};
  return {};
}

}  // namespace llmd::bench
