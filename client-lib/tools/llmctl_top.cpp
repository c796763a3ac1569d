// llmctl top: polls GET /v1/status and draws the scheduler's clients, the slots and the KV tiers.
//
// On a terminal each frame is redrawn in place (cursor home, each line cleared to its end, the rest
// of the screen cleared), with the cursor hidden until the view ends; elsewhere (a pipe, a file, a
// test) frames are printed one after the other, separated by one blank line, and a frame itself
// never holds a blank line. --json prints snapshots of the relevant sections instead, one JSON
// object per line.
#include "client-lib/tools/llmctl_top.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmd::llmctl {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kOk = 0, kFailed = 1;
constexpr double kMinInterval = 0.2, kMaxInterval = 60.0;

const char* kTopUsage =
    "usage: llmctl top [--interval SECONDS] [--iterations N] [--sort share|counter] [--json]\n"
    "\n"
    "A live view of llmd's scheduler from its status: clients (every client for admins, your own\n"
    "otherwise), slots and KV memory tiers. Ctrl-C ends it.\n"
    "\n"
    "  --interval SECONDS   time between refreshes, 0.2 to 60 (default 1)\n"
    "  --iterations N       stop after N refreshes (default: until Ctrl-C; 1 with --json)\n"
    "  --sort share|counter order clients by their share of recent service (default) or by their\n"
    "                       scheduler counter\n"
    "  --json               print the scheduler, slots, queue, counters and kv sections with a\n"
    "                       timestamp, one JSON object per line, instead of the view\n";

// Set by SIGINT, SIGTERM and SIGHUP, which also interrupt a request in progress.
std::atomic<bool> g_stop{false};
std::atomic<llmc_client*> g_client{nullptr};

void on_stop_signal(int) {
  g_stop.store(true);
  if (llmc_client* c = g_client.load()) llmc_interrupt(c);  // async-signal-safe
}

enum class SortBy { share, counter };

struct TopOptions {
  double interval_s = 1.0;
  long iterations = 0;  // 0: until stopped
  SortBy sort = SortBy::share;
  bool json = false;
  bool help = false;
};

// --- JSON access tolerant of missing fields and nulls (older daemons, users without a name) ---

const json& field(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

double num(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_number() ? v.get<double>() : 0.0;
}

const json& array_of(const json& j, const char* key) {
  static const json kEmpty = json::array();
  const json& v = field(j, key);
  return v.is_array() ? v : kEmpty;
}

// --- text ---

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// Names come from other users' requests and the password database: no control character may
// reach the terminal.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const unsigned char ch : s) out += (ch < 0x20 || ch == 0x7f) ? '?' : static_cast<char>(ch);
  return out;
}

bool continuation_byte(unsigned char ch) { return (ch & 0xC0) == 0x80; }

// Width in columns, counting each UTF-8 code point as one.
std::size_t width_of(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char ch) { return !continuation_byte(static_cast<unsigned char>(ch)); }));
}

// The first `width` code points of s.
std::string head(std::string_view s, std::size_t width) {
  std::size_t i = 0, n = 0;
  for (; i < s.size(); ++i) {
    if (!continuation_byte(static_cast<unsigned char>(s[i])) && n++ == width) break;
  }
  return std::string(s.substr(0, i));
}

// s cut to `width` columns, ".." marking a cut.
std::string fit(const std::string& s, std::size_t width) {
  if (width_of(s) <= width) return s;
  if (width <= 2) return head(s, width);
  return head(s, width - 2) + "..";
}

std::string pad(const std::string& s, std::size_t width, bool right) {
  const std::string t = fit(s, width);
  const std::string fill(width - width_of(t), ' ');
  return right ? fill + t : t + fill;
}

// 987, 12.3k, 4.56M, 789G: at most 5 characters for any count below 10^15.
std::string compact(double v) {
  if (!std::isfinite(v)) return "?";
  if (std::fabs(v) < 10000) return format("%.0f", v);
  const char* suffixes = "kMGTP";
  int i = -1;
  while (std::fabs(v) >= 999.5 && i < 4) {
    v /= 1000;
    ++i;
  }
  const double a = std::fabs(v);
  return format(a < 9.995 ? "%.2f%c" : a < 99.95 ? "%.1f%c" : "%.0f%c", v, suffixes[i]);
}

std::string human_bytes(double b) {
  if (b < 1024) return format("%.0f B", b);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  b /= 1024;
  while (b >= 1024 && i < 3) {
    b /= 1024;
    ++i;
  }
  return format(b < 99.95 ? "%.1f %s" : "%.0f %s", b, units[i]);
}

std::string duration(double s) {
  const auto t = static_cast<long long>(s);
  if (t < 60) return format("%llds", t);
  if (t < 3600) return format("%lldm%02llds", t / 60, t % 60);
  if (t < 86400) return format("%lldh%02lldm", t / 3600, t % 3600 / 60);
  return format("%lldd%02lldh", t / 86400, t % 86400 / 3600);
}

std::string clock_time(std::chrono::system_clock::time_point now) {
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

std::string iso8601_utc(std::chrono::system_clock::time_point now) {
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return format("%s.%03lldZ", buf, static_cast<long long>(ms));
}

// --- tables ---

struct Column {
  const char* title;
  std::size_t width;
  bool right;
};

std::string table_row(const std::vector<Column>& columns, const std::vector<std::string>& cells) {
  std::string line;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (i > 0) line += ' ';
    const std::string& cell = i < cells.size() ? cells[i] : std::string();
    // The last column, left-aligned, is not padded: no trailing blanks.
    if (i + 1 == columns.size() && !columns[i].right) line += fit(cell, columns[i].width);
    else line += pad(cell, columns[i].width, columns[i].right);
  }
  return line;
}

std::string table_header(const std::vector<Column>& columns) {
  std::vector<std::string> titles;
  for (const auto& c : columns) titles.emplace_back(c.title);
  return table_row(columns, titles);
}

// "alice/app", or the uid where the user has no name, or the raw client id.
std::string client_name(const json& c) {
  std::string who;
  const json& user = field(c, "user");
  const json& uid = field(c, "uid");
  const json& app = field(c, "app");
  if (user.is_string()) who = user.get<std::string>();
  else if (uid.is_number()) who = std::to_string(uid.get<long long>());
  else return printable(field(c, "client").is_string() ? field(c, "client").get<std::string>() : "?");
  if (app.is_string()) who += "/" + app.get<std::string>();
  return printable(who);
}

// --- the frame ---

void render_header(const json& st, std::chrono::system_clock::time_point now, std::vector<std::string>& lines) {
  const json& sched = field(st, "scheduler");
  const json& queue = field(st, "queue");
  const json& policy = field(sched, "policy");
  std::string line = "llmd " + clock_time(now) + " up " + duration(num(st, "uptime_s"));
  line += " | policy " + (policy.is_string() ? printable(policy.get<std::string>()) : std::string("?"));
  line += " | preemptions " + compact(num(sched, "preemptions")) + " | parks " + compact(num(sched, "parks"));
  line += " | queued " + compact(num(queue, "queued")) + ", running " + compact(num(queue, "running")) +
          ", in flight " + compact(num(queue, "in_flight"));
  line += " | generated " + compact(num(field(st, "counters"), "tokens_generated")) + " tokens";
  lines.push_back(std::move(line));
}

// A latency percentile in ms ("-" when the client finished no request in the last minute).
std::string ms_of(const json& percentiles, const char* which) {
  if (!percentiles.is_object()) return "-";
  const double v = num(percentiles, which);
  return v < 10000 ? format("%.0fms", v) : format("%.0fs", v / 1000.0);
}

void render_clients(const json& st, const TopOptions& o, std::vector<std::string>& lines) {
  static const std::vector<Column> kColumns = {
      {"CLIENT", 24, false}, {"W", 5, true},      {"RUN", 4, true},  {"QUEUED", 6, true},
      {"TOK/S", 7, true},    {"COUNTER", 7, true}, {"SHARE", 6, true}, {"IN", 6, true},
      {"OUT", 6, true},      {"SWAP", 6, true},    {"PREEMPT", 7, true}, {"TTFT50", 7, true},
      {"TTFT99", 7, true}};
  const json& sched = field(st, "scheduler");
  if (!sched.is_object()) {
    lines.push_back("(this llmd reports no scheduler)");
    return;
  }
  std::vector<const json*> clients;
  for (const auto& c : array_of(sched, "clients")) clients.push_back(&c);
  const char* first = o.sort == SortBy::share ? "share" : "counter";
  const char* second = o.sort == SortBy::share ? "counter" : "share";
  std::stable_sort(clients.begin(), clients.end(), [&](const json* a, const json* b) {
    if (num(*a, first) != num(*b, first)) return num(*a, first) > num(*b, first);
    if (num(*a, second) != num(*b, second)) return num(*a, second) > num(*b, second);
    return field(*a, "client").dump() < field(*b, "client").dump();
  });
  lines.push_back(table_header(kColumns));
  for (const json* c : clients) {
    const double rate = num(*c, "tokens_per_s");
    lines.push_back(table_row(
        kColumns, {client_name(*c), format("%.3g", num(*c, "weight")), compact(num(*c, "running")),
                   compact(num(*c, "queued")), rate < 10000 ? format("%.1f", rate) : compact(rate),
                   compact(num(*c, "counter")), format("%.1f%%", 100.0 * num(*c, "share")),
                   compact(num(*c, "input_tokens")), compact(num(*c, "output_tokens")),
                   compact(num(*c, "swap_tokens")), compact(num(*c, "preempted")),
                   ms_of(field(field(*c, "latency"), "ttft_ms"), "p50"),
                   ms_of(field(field(*c, "latency"), "ttft_ms"), "p99")}));
  }
  if (clients.empty()) lines.push_back("(no clients yet)");
  const json& admin = field(field(st, "caller"), "admin");
  if (admin.is_boolean() && !admin.get<bool>()) {
    lines.push_back(format("(only the clients of your uid %.0f; an admin sees every client)",
                           num(field(st, "caller"), "uid")));
  }
}

void render_slots(const json& st, std::vector<std::string>& lines) {
  static const std::vector<Column> kColumns = {
      {"SLOT", 4, true}, {"STATE", 5, false}, {"CELLS", 7, true}, {"SESSION", 40, false}};
  lines.push_back(table_header(kColumns));
  std::size_t empty = 0;
  for (const auto& s : array_of(st, "slots")) {
    const json& session = field(s, "session");
    const json& busy = field(s, "busy");
    const bool is_busy = busy.is_boolean() && busy.get<bool>();
    if (!is_busy && num(s, "cells") <= 0) {  // most of a large context's slots hold nothing
      ++empty;
      continue;
    }
    lines.push_back(table_row(kColumns, {compact(num(s, "index")), is_busy ? "busy" : "idle", compact(num(s, "cells")),
                                         session.is_string() ? printable(session.get<std::string>()) : "-"}));
  }
  if (empty > 0) lines.push_back("(" + std::to_string(empty) + " empty slots not shown)");
}

std::string codec_mix(const json& by_codec) {
  std::string out;
  if (!by_codec.is_object()) return out;
  for (const auto& [codec, n] : by_codec.items()) {
    if (!out.empty()) out += ", ";
    out += printable(codec) + " " + (n.is_number() ? compact(n.get<double>()) : std::string("?"));
  }
  return out.empty() ? "-" : out;
}

void render_kv(const json& st, std::vector<std::string>& lines) {
  const json& kv = field(st, "kv");
  const json& restore = field(kv, "restore");
  if (!restore.is_string() || restore.get<std::string>() != "chunks") {
    lines.push_back("KV: restore by recompute (no chunk store)");
    return;
  }
  static const std::vector<Column> kColumns = {{"KV", 4, false},     {"USED", 9, true},   {"BUDGET", 9, true},
                                               {"USE%", 6, true},     {"CHUNKS", 7, true}, {"CODECS", 60, false}};
  lines.push_back(table_header(kColumns));
  for (const char* tier : {"ram", "disk"}) {
    const json& t = field(kv, tier);
    const double used = num(t, "bytes"), budget = num(t, "budget_bytes");
    lines.push_back(table_row(kColumns, {tier, human_bytes(used), budget > 0 ? human_bytes(budget) : "-",
                                         budget > 0 ? format("%.1f%%", 100.0 * used / budget) : "-",
                                         compact(num(t, "chunks")), codec_mix(field(t, "chunks_by_codec"))}));
  }
  const json& policy = field(kv, "policy");
  std::string line = format("kv: chunks of %.0f tokens, policy ", num(kv, "chunk_tokens")) +
                     (policy.is_string() ? printable(policy.get<std::string>()) : std::string("?")) + "; " +
                     compact(num(kv, "write_backs")) + " write-backs, " + compact(num(kv, "pending_write_backs")) +
                     " pending, " + compact(num(kv, "write_errors")) + " write errors, " +
                     compact(num(kv, "bad_chunks")) + " bad chunks";
  lines.push_back(std::move(line));
  const json& last_error = field(kv, "last_error");
  if (last_error.is_string()) lines.push_back(fit("kv last error: " + printable(last_error.get<std::string>()), 118));
}

std::vector<std::string> render(const json& st, const TopOptions& o, std::chrono::system_clock::time_point now) {
  std::vector<std::string> lines;
  render_header(st, now, lines);
  render_clients(st, o, lines);
  render_slots(st, lines);
  render_kv(st, lines);
  return lines;
}

json snapshot(const json& st, std::chrono::system_clock::time_point now) {
  json s = {{"timestamp", iso8601_utc(now)}};
  for (const char* key : {"uptime_s", "scheduler", "slots", "queue", "counters", "kv"}) s[key] = field(st, key);
  return s;
}

// --- output ---

// Where frames go. On a terminal: redrawn in place, the cursor hidden meanwhile (and shown again
// when this is destroyed).
class Screen {
 public:
  explicit Screen(bool tty) : tty_(tty) {
    if (tty_) emit("\x1b[?25l\x1b[H\x1b[2J");
  }
  ~Screen() {
    if (tty_) emit("\x1b[?25h\n");
    std::fflush(stdout);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  // False: stdout cannot be written any more (errno says why).
  bool show(const std::vector<std::string>& lines) {
    std::string out;
    if (tty_) {
      std::size_t rows = 24, cols = 80;
      winsize ws{};
      if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
        rows = ws.ws_row;
        cols = ws.ws_col;
      }
      std::vector<std::string> shown = lines;
      if (shown.size() > rows) {
        const std::size_t more = shown.size() - rows + 1;
        shown.resize(rows - 1);
        shown.push_back(format("(%zu more lines: enlarge the terminal)", more));
      }
      // The last column is left empty: writing into it makes some terminals wrap.
      out = "\x1b[H";
      for (std::size_t i = 0; i < shown.size(); ++i) {
        out += head(shown[i], cols - 1) + "\x1b[K";
        if (i + 1 < shown.size()) out += '\n';
      }
      out += "\x1b[J";
    } else {
      if (!first_) out += '\n';
      for (const auto& l : lines) out += l + '\n';
    }
    first_ = false;
    return emit(out);
  }

  static bool emit(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    return std::fflush(stdout) == 0;
  }

 private:
  bool tty_;
  bool first_ = true;
};

// Sleeps until `deadline` or a stop signal; returns false if stopped.
bool sleep_until(Clock::time_point deadline) {
  while (!g_stop.load()) {
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return true;
    std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(50)));
  }
  return false;
}

std::optional<int> parse_args(const TopContext& ctx, const std::vector<std::string>& args, TopOptions& o) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--json") {
      o.json = true;
    } else if (a == "-h" || a == "--help") {
      o.help = true;
    } else if (a == "--interval") {
      if (!has_value) return ctx.usage_error("--interval needs SECONDS");
      const std::string& v = args[++i];
      char* end = nullptr;
      const double s = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(s >= kMinInterval && s <= kMaxInterval)) {
        return ctx.usage_error("--interval must be a number of seconds from 0.2 to 60, not '" + v + "'");
      }
      o.interval_s = s;
    } else if (a == "--iterations") {
      if (!has_value) return ctx.usage_error("--iterations needs a number");
      const std::string& v = args[++i];
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1) {
        return ctx.usage_error("--iterations must be a whole number of at least 1, not '" + v + "'");
      }
      o.iterations = n;
    } else if (a == "--sort") {
      if (!has_value) return ctx.usage_error("--sort needs share or counter");
      const std::string& v = args[++i];
      if (v == "share") o.sort = SortBy::share;
      else if (v == "counter") o.sort = SortBy::counter;
      else return ctx.usage_error("--sort must be share or counter, not '" + v + "'");
    } else {
      return ctx.usage_error("unknown argument for top: " + a);
    }
  }
  return std::nullopt;
}

}  // namespace

int cmd_top(const TopContext& ctx, const std::vector<std::string>& args) {
  TopOptions o;
  o.json = ctx.json;
  if (auto rc = parse_args(ctx, args, o)) return *rc;
  if (o.help) {
    std::fputs(kTopUsage, stdout);
    return kOk;
  }
  const long iterations = o.iterations != 0 ? o.iterations : (o.json ? 1 : 0);
  const char* term = std::getenv("TERM");
  const bool tty = !o.json && ::isatty(STDOUT_FILENO) && !(term != nullptr && std::strcmp(term, "dumb") == 0);

  // No SA_RESTART: a blocked wait returns at once, and the request in progress sees g_stop.
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);

  std::optional<llmc::Client> client;
  try {
    client.emplace(ctx.socket);
    client->set_timeout(std::chrono::seconds(30));
  } catch (const llmc::Error& e) {
    return ctx.report(e);
  }
  g_client.store(client->get());
  struct Forget {
    ~Forget() { g_client.store(nullptr); }
  } forget;
  if (g_stop.load()) client->interrupt();  // a signal before the client existed
  const auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
  std::optional<Screen> screen;  // made with the first frame: an error before it leaves the terminal alone
  auto next = Clock::now();
  for (long n = 0; (iterations == 0 || n < iterations) && !g_stop.load(); ++n) {
    if (n > 0) {
      next = std::max(next + interval, Clock::now());  // a late frame does not make the next ones hurry
      if (!sleep_until(next)) break;
    }
    std::string body;
    try {
      body = client->status().json;
    } catch (const llmc::Error& e) {
      if (e.code() == LLMC_ERR_CANCELLED && e.http_status() == 0) break;
      screen.reset();
      return ctx.report(e);
    }
    const json st = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!st.is_object()) {
      screen.reset();
      return ctx.bad_answer(200, body);
    }
    const auto now = std::chrono::system_clock::now();
    bool written = false;
    if (o.json) {
      written = Screen::emit(snapshot(st, now).dump() + "\n");
    } else {
      if (!screen) screen.emplace(tty);
      written = screen->show(render(st, o, now));
    }
    if (!written) {
      if (errno == EPIPE) return kOk;  // the reader went away (llmctl top | head)
      const int err = errno;
      screen.reset();
      std::fprintf(stderr, "llmctl: cannot write the view: %s\n", std::strerror(err));
      return kFailed;
    }
  }
  return kOk;
}

}  // namespace llmd::llmctl
