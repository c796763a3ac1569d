// llmctl: the shell's way to llmd. See `llmctl --help` and llmctl(1).
//
// Exit codes: 0 success; 1 llmd answered with an error; 2 bad usage; 3 llmd cannot be reached;
// 4 no such session (or model); 130 interrupted.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client-lib/tools/llmctl_top.h"
#include "llmclient/llmclient.hpp"

namespace {

using nlohmann::json;

constexpr int kOk = 0, kFailed = 1, kUsage = 2, kUnreachable = 3, kNotFound = 4, kInterrupted = 130;

std::atomic<bool> g_interrupt{false};
// The client of the command running, for the SIGINT handler (llmc_interrupt is async-signal-safe).
std::atomic<llmc_client*> g_client{nullptr};

void on_sigint(int) {
  g_interrupt.store(true);
  if (llmc_client* c = g_client.load()) llmc_interrupt(c);
}

const char* kUsageText =
    "usage: llmctl [--socket PATH] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  status                         the daemon, its model, slots and queue\n"
    "  models                         the model llmd serves\n"
    "  run [OPTIONS] PROMPT...        generate an answer; text streams to stdout\n"
    "        --session ID             continue a stored session (the prompt is its next message)\n"
    "        --raw                    plain text completion, no chat template\n"
    "        --max-tokens N  --temperature T  --seed N  --stop TEXT\n"
    "        --json-schema FILE|JSON  the answer is JSON valid against this JSON Schema (a file,\n"
    "                                 or the schema itself when it starts with '{'); one-off chats\n"
    "        --grammar FILE|GBNF      the answer follows this GBNF grammar (a file, or the grammar\n"
    "                                 itself when it holds '::='); one-off chats\n"
    "  chat [--session ID] [--system TEXT] [--overflow POLICY]\n"
    "                                 interactive chat kept in a session (a new one unless --session);\n"
    "                                 Ctrl-C stops the current answer, Ctrl-D or /exit leaves\n"
    "  sessions list                  your sessions (every user's for admins)\n"
    "  sessions create [--system TEXT] [--app NAME] [--overflow POLICY]\n"
    "                                 a new session; prints its id. POLICY: what happens when it\n"
    "                                 outgrows the context: drop_oldest, sliding or error (default: llmd's)\n"
    "  sessions show ID               a session, its window and its messages\n"
    "  sessions rm ID...              delete sessions\n"
    "  sessions audit ID...           check every stored copy of a session's KV against its\n"
    "                                 recomputed history (exit 1 if any is wrong)\n"
    "  sessions fork ID               a new session with the same messages; prints its id\n"
    "  sessions prewarm ID            bring a session's KV into a slot before its next message\n"
    "  sessions rewind ID --drop-last N | --keep K\n"
    "                                 drop the last N messages, or keep the first K (the system\n"
    "                                 message counted): whole turns, to edit or regenerate one\n"
    "  top [--interval SECONDS] [--iterations N] [--sort share|counter]\n"
    "                                 live view of the scheduler: clients, slots, KV memory; refreshes\n"
    "                                 every second (0.2 to 60) until Ctrl-C or N refreshes; with --json\n"
    "                                 one snapshot of the scheduler, slots, queue and kv sections\n"
    "\n"
    "Options:\n"
    "  --socket PATH   llmd's socket (default: $LLMD_SOCKET, /run/llmd/llmd.sock,\n"
    "                  $XDG_RUNTIME_DIR/llmd/llmd.sock)\n"
    "  --json          print llmd's JSON answers (for scripts); run does not stream then\n"
    "  -h, --help      this help\n"
    "\n"
    "Exit codes: 0 ok, 1 llmd reported an error, 2 usage, 3 llmd not reachable, 4 not found,\n"
    "130 interrupted.\n";

struct Options {
  std::string socket;
  bool json = false;
};

// llmd's JSON answer, or a null json if it is not JSON (reported by the caller).
json parse_answer(const std::string& body) { return json::parse(body, nullptr, /*allow_exceptions=*/false); }

int bad_answer(int status, const std::string& body) {
  std::fprintf(stderr, "llmctl: unexpected answer from llmd (status %d): %.200s\n", status, body.c_str());
  return kFailed;
}

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "llmctl: %s\n(see llmctl --help)\n", msg.c_str());
  return kUsage;
}

// Reports a failed call; returns the exit code for it. llmd's error answers read "llmd answered
// STATUS: MESSAGE"; failures without an answer (llmd not running, interrupted) their message.
int report(const llmc::Error& e) {
  if (e.code() == LLMC_ERR_CANCELLED && (e.http_status() == 0 || e.http_status() / 100 == 2)) {
    std::fprintf(stderr, "\nllmctl: interrupted\n");
    return kInterrupted;
  }
  if (e.http_status() != 0 && e.http_status() / 100 != 2) {
    std::fprintf(stderr, "llmctl: llmd answered %d: %s\n", e.http_status(), e.what());
    return e.http_status() == 404 ? kNotFound : kFailed;
  }
  std::fprintf(stderr, "llmctl: %s\n", e.what());
  if (e.http_status() == 0 && e.code() == LLMC_ERR_UNAVAILABLE) {
    std::fprintf(stderr, "llmctl: from a source checkout, scripts/run.sh runs it in the foreground\n");
    return kUnreachable;
  }
  if (e.http_status() == 0 && e.code() == LLMC_ERR_PERMISSION) return kUnreachable;
  return kFailed;
}

// The client for this command: connected, reachable from the SIGINT handler.
class Connection {
 public:
  explicit Connection(const Options& o) : client_(o.socket) { g_client.store(client_.get()); }
  ~Connection() { g_client.store(nullptr); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  llmc::Client& operator*() { return client_; }
  llmc::Client* operator->() { return &client_; }

 private:
  llmc::Client client_;
};

int simple_get(const Options& o, const std::string& target, void (*pretty)(const json&)) {
  try {
    Connection c(o);
    const std::string body = target == "/v1/status" ? c->status().json : c->call("GET", target).body;
    if (o.json) {
      std::printf("%s\n", body.c_str());
      return kOk;
    }
    try {
      pretty(json::parse(body));
    } catch (const std::exception&) {
      return bad_answer(200, body);
    }
    return kOk;
  } catch (const llmc::Error& e) {
    return report(e);
  }
}

std::string mib(double bytes);
std::string codec_mix(const json& by_codec);

void print_status(const json& j) {
  const auto& m = j.at("model");
  std::printf("llmd %s: %s\n", j.value("version", "?").c_str(), j.value("status", "?").c_str());
  std::printf("model:    %s (%s, %s)\n", m.value("id", "?").c_str(), m.value("description", "").c_str(),
              m.value("path", "").c_str());
  std::printf("context:  sessions up to %d tokens, %zu slots\n", j.at("context").value("max_session_tokens", 0),
              j.at("slots").size());
  for (const auto& s : j.at("slots")) {
    std::printf("  slot %d: %s, %d cells%s%s\n", s.value("index", 0), s.value("busy", false) ? "busy" : "idle",
                s.value("cells", 0), s.at("session").is_string() ? ", session " : "",
                s.at("session").is_string() ? s.at("session").get<std::string>().c_str() : "");
  }
  const auto& q = j.at("queue");
  std::printf("queue:    %d running, %d queued\n", q.value("running", 0), q.value("queued", 0));
  std::printf("sessions: %d stored\n", j.at("sessions").value("total", 0));
  if (j.contains("kv") && j["kv"].value("restore", "") == "chunks") {
    const json& kv = j["kv"];
    for (const char* tier : {"ram", "disk"}) {
      const json& t = kv[tier];
      std::printf("kv %-5s %s of %s, %d chunks (%s)\n", tier, mib(t.value("bytes", 0.0)).c_str(),
                  mib(t.value("budget_bytes", 0.0)).c_str(), t.value("chunks", 0),
                  codec_mix(t.value("chunks_by_codec", json::object())).c_str());
    }
    if (kv.contains("last_error") && kv["last_error"].is_string()) {
      std::printf("kv last error: %s\n", kv["last_error"].get<std::string>().c_str());
    }
  } else {
    std::printf("kv:       restore by recompute\n");
  }
  std::printf("uptime:   %.0f s\n", j.value("uptime_s", 0.0));
}

void print_models(const json& j) {
  for (const auto& m : j.at("data")) {
    const auto& meta = m.at("meta");
    std::printf("%s  (%s, %llu parameters, %s)\n", m.value("id", "?").c_str(), meta.value("architecture", "?").c_str(),
                static_cast<unsigned long long>(meta.value("n_params", 0ull)), meta.value("file_type", "?").c_str());
  }
}

// The model's window over a session's transcript.
void print_session_window(const llmc::Session& s) {
  std::printf("window: from message %lld on (%d earlier messages outside it, %lld tokens dropped so far); "
              "overflow: %s\n",
              static_cast<long long>(s.window_first_message), s.dropped_messages,
              static_cast<long long>(s.dropped_tokens), s.overflow.empty() ? "?" : s.overflow.c_str());
}

void print_session_line(const llmc::Session& s) {
  std::printf("%s  %3d messages  %5d tokens%s%s  %s\n", s.id.c_str(), s.n_messages, s.n_tokens,
              s.busy ? "  busy" : "", s.resident ? "  resident" : "", s.app.c_str());
}

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return buf;
}

std::string codec_mix(const json& by_codec) {
  std::string out;
  if (!by_codec.is_object()) return out;
  for (const auto& [codec, n] : by_codec.items()) {
    if (!out.empty()) out += ", ";
    out += codec + " " + n.dump();
  }
  return out.empty() ? "none" : out;
}

// Where a session's KV is: its slot (resident), and its stored chunks per tier and codec.
void print_session_kv(const json& s) {
  if (!s.contains("kv") || !s["kv"].is_object()) return;
  const json& kv = s["kv"];
  std::printf("kv: %s; %d chunks stored covering %d tokens (RAM %d, %s; disk %d, %s); codecs: %s\n",
              s.value("resident", false) ? "resident in a slot" : "not resident", kv.value("chunks", 0),
              kv.value("tokens", 0), kv["ram"].value("chunks", 0), mib(kv["ram"].value("bytes", 0.0)).c_str(),
              kv["disk"].value("chunks", 0), mib(kv["disk"].value("bytes", 0.0)).c_str(),
              codec_mix(kv.value("chunks_by_codec", json::object())).c_str());
}

// Streams one generation; prints text as it arrives. Returns the exit code.
int generate(llmc::Client& c, const Options& o, const std::string& prompt, llmc::GenParams params) {
  params.stream = !o.json;
  bool any_text = false;
  try {
    const llmc::Result r = c.generate(prompt, params, [&](std::string_view text) {
      if (o.json) return;
      any_text = true;
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    if (o.json) std::printf("%s\n", r.json.c_str());
    else std::printf("\n");
    if (!o.json && r.window_moved) {
      std::fprintf(stderr,
                   "(the conversation outgrew the context: %d earlier messages, %lld tokens, left the model's window "
                   "before this answer; the transcript keeps them)\n",
                   r.window_dropped_messages, static_cast<long long>(r.window_dropped_tokens));
    }
    return kOk;
  } catch (const llmc::Error& e) {
    if (any_text) std::printf("\n");
    return report(e);
  }
}

// The value of --json-schema / --grammar: the text itself when it shows `marker` (a schema that
// starts with "{" after blanks, a grammar that holds "::="), else the contents of the file it names.
std::optional<std::string> inline_or_file(const std::string& v, const std::string& marker, bool at_start) {
  const std::size_t first = v.find_first_not_of(" \t\r\n");
  const std::size_t at = v.find(marker);
  if (at != std::string::npos && (!at_start || at == first)) return v;
  std::ifstream in(v, std::ios::binary);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return std::nullopt;
  return text;
}

int cmd_run(const Options& o, std::vector<std::string> args) {
  llmc::GenParams params;
  bool raw = false;
  std::vector<std::string> words;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= args.size()) return std::nullopt;
      return args[++i];
    };
    try {
      if (a == "--session") {
        auto v = value();
        if (!v) return usage_error("--session needs an ID");
        params.session = *v;
      } else if (a == "--raw") {
        raw = true;
      } else if (a == "--max-tokens") {
        auto v = value();
        if (!v) return usage_error("--max-tokens needs a number");
        const long long n = std::stoll(*v);  // 0 goes to llmd, which says what the range is
        if (n < 0 || n > INT32_MAX) return report(llmc::Error(LLMC_ERR_INVALID_ARGUMENT, "max_tokens must be at least 1"));
        params.max_tokens = static_cast<std::int32_t>(n);
      } else if (a == "--temperature") {
        auto v = value();
        if (!v) return usage_error("--temperature needs a number");
        params.temperature = std::stod(*v);
      } else if (a == "--seed") {
        auto v = value();
        if (!v) return usage_error("--seed needs a number");
        const long long seed = std::stoll(*v);
        if (seed < 0 || seed > 0xFFFFFFFFll) {
          return report(llmc::Error(LLMC_ERR_INVALID_ARGUMENT, "seed must be between 0 and 4294967295"));
        }
        params.seed = static_cast<std::uint32_t>(seed);
      } else if (a == "--stop") {
        auto v = value();
        if (!v) return usage_error("--stop needs a text");
        params.stop = {*v};
      } else if (a == "--json-schema" || a == "--grammar") {
        auto v = value();
        if (!v) return usage_error(a + " needs a FILE or the text itself");
        const bool schema = a == "--json-schema";
        auto text = inline_or_file(*v, schema ? "{" : "::=", schema);
        if (!text) return usage_error(a + ": cannot read " + *v);
        (schema ? params.json_schema : params.grammar) = std::move(*text);
      } else if (a.rfind("--", 0) == 0 && a.size() > 2) {
        return usage_error("unknown option for run: " + a);
      } else {
        words.push_back(a);
      }
    } catch (const std::exception&) {
      return usage_error("bad number for " + a);
    }
  }
  std::string prompt;
  for (const auto& w : words) prompt += (prompt.empty() ? "" : " ") + w;
  if (prompt.empty() && !::isatty(STDIN_FILENO)) {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (prompt.empty()) return usage_error("run needs a PROMPT (or text on standard input)");
  if (!params.session.empty() && raw) return usage_error("--raw and --session do not go together");
  if ((params.json_schema || params.grammar) && (raw || !params.session.empty())) {
    return usage_error("--json-schema and --grammar are for one-off chats (not with --raw or --session)");
  }
  params.completion = raw;
  try {
    Connection c(o);
    return generate(*c, o, prompt, params);
  } catch (const llmc::Error& e) {
    return report(e);
  }
}

int cmd_chat(const Options& o, std::vector<std::string> args) {
  std::string session, system, overflow;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--session" && i + 1 < args.size()) session = args[++i];
    else if (args[i] == "--system" && i + 1 < args.size()) system = args[++i];
    else if (args[i] == "--overflow" && i + 1 < args.size()) overflow = args[++i];
    else return usage_error("unknown argument for chat: " + args[i]);
  }
  if (o.json) return usage_error("chat is interactive; --json does not apply");
  if (!session.empty() && !system.empty()) return usage_error("--system applies to new sessions only");
  if (!session.empty() && !overflow.empty()) return usage_error("--overflow applies to new sessions only");
  try {
    Connection c(o);
    if (session.empty()) {
      session = c->create_session(system, "llmctl", overflow);
      std::fprintf(stderr, "session %s (continue later with: llmctl chat --session %s)\n", session.c_str(),
                   session.c_str());
    }
    const bool tty = ::isatty(STDIN_FILENO);
    std::string line;
    while (true) {
      if (tty) {
        std::fputs("> ", stdout);
        std::fflush(stdout);
      }
      g_interrupt.store(false);
      c->clear_interrupt();
      if (!std::getline(std::cin, line)) {
        if (g_interrupt.load() && !std::cin.eof()) {  // Ctrl-C at the prompt: a fresh prompt
          std::cin.clear();
          std::printf("\n");
          continue;
        }
        if (tty) std::printf("\n");
        return kOk;
      }
      if (line == "/exit" || line == "/quit") return kOk;
      if (line.empty()) continue;
      llmc::GenParams params;
      params.session = session;
      const int rc = generate(*c, o, line, params);
      if (rc == kInterrupted) continue;  // Ctrl-C stopped this answer only
      if (rc != kOk) return rc;
    }
  } catch (const llmc::Error& e) {
    return report(e);
  }
}

// One line per session audited, and one per copy that failed.
bool print_audit(const std::string& id, const json& j) {
  const bool ok = j.value("ok", false);
  std::size_t chunks = 0, stale = 0;
  for (const auto& c : j.value("chunks", json::array())) (c.value("stale", false) ? stale : chunks) += 1;
  const json& res = j.contains("resident") ? j.at("resident") : json(nullptr);
  std::printf("%s: %s: %d tokens; %zu chunks (%d copies checked, %d wrong)%s%s; resident KV: %s\n", id.c_str(),
              ok ? "ok" : "WRONG KV", j.value("tokens", 0), chunks, j.value("checked", 0), j.value("failed", 0),
              stale > 0 ? ", stale chunks not compared: " : "", stale > 0 ? std::to_string(stale).c_str() : "",
              res.is_null() ? "not in a slot" : (res.value("ok", false) ? "ok" : "WRONG"));
  for (const auto& c : j.value("chunks", json::array())) {
    for (const auto& copy : c.value("copies", json::array())) {
      if (copy.value("ok", false)) continue;
      std::printf("  chunk %d (%s, %s): %s\n", c.value("index", 0), copy.value("tier", "").c_str(),
                  copy.value("codec", "").c_str(), copy.value("error", json("?")).dump().c_str());
    }
  }
  if (!res.is_null() && !res.value("ok", false)) std::printf("  slot %d: %s\n", res.value("slot", 0), res.value("error", json("?")).dump().c_str());
  return ok;
}

// llmctl sessions fork ID / rewind ID --drop-last N | --keep K.
int cmd_branch(const Options& o, const std::vector<std::string>& args) {
  const bool fork = args[0] == "fork";
  if (fork && args.size() != 2) return usage_error("sessions fork needs one session ID");
  llmc::Client::Rewind how = llmc::Client::Rewind::drop_last;
  std::uint32_t n = 0;
  if (!fork) {
    if (args.size() != 4 || (args[2] != "--drop-last" && args[2] != "--keep")) {
      return usage_error("sessions rewind needs ID and --drop-last N or --keep K");
    }
    const std::string& v = args[3];
    if (v.empty() || v.size() > 10 || v.find_first_not_of("0123456789") != std::string::npos ||
        std::stoull(v) > 0xFFFFFFFFull) {
      return usage_error(args[2] + " needs a number of messages");
    }
    how = args[2] == "--keep" ? llmc::Client::Rewind::keep : llmc::Client::Rewind::drop_last;
    n = static_cast<std::uint32_t>(std::stoull(v));
  }
  try {
    Connection c(o);
    if (fork) {
      if (o.json) {
        std::printf("%s\n", c->call("POST", "/v1/sessions/" + args[1] + "/fork").body.c_str());
      } else {
        std::printf("%s\n", c->fork_session(args[1]).c_str());
      }
      return kOk;
    }
    const llmc::SessionDetail d = c->rewind_session(args[1], n, how);
    if (o.json) {
      std::printf("%s\n", d.json.c_str());
    } else {
      print_session_line(d.session);
    }
    return kOk;
  } catch (const llmc::Error& e) {
    return report(e);
  }
}

// llmctl sessions prewarm ID: the session's KV is in a slot when it returns.
int cmd_prewarm(const Options& o, const std::vector<std::string>& args) {
  if (args.size() != 2) return usage_error("sessions prewarm needs one session ID");
  try {
    Connection c(o);
    if (o.json) {
      std::printf("%s\n", c->call("POST", "/v1/sessions/" + args[1] + "/prewarm").body.c_str());
      return kOk;
    }
    const auto p = c->prewarm_session(args[1]);
    std::printf("%s: %u tokens in a slot (%u loaded from KV chunks, %u recomputed)\n", args[1].c_str(), p.tokens,
                p.loaded, p.restored);
    return kOk;
  } catch (const llmc::Error& e) {
    return report(e);
  }
}

int cmd_sessions(const Options& o, std::vector<std::string> args) {
  const std::string sub = args.empty() ? std::string() : args[0];
  if (sub == "fork" || sub == "rewind") return cmd_branch(o, args);
  if (sub == "prewarm") return cmd_prewarm(o, args);
  const bool list = sub == "list" && args.size() == 1, show = sub == "show" && args.size() == 2,
             rm = sub == "rm" && args.size() >= 2, audit = sub == "audit" && args.size() >= 2, create = sub == "create";
  if (!list && !show && !rm && !audit && !create) {
    return usage_error("sessions needs list, create, show ID, rm ID..., audit ID..., fork ID, rewind ID or prewarm ID");
  }
  try {
    Connection c(o);
    if (create) {
      std::string system, app, overflow;
      for (std::size_t i = 1; i < args.size(); ++i) {
        if (args[i] == "--system" && i + 1 < args.size()) system = args[++i];
        else if (args[i] == "--app" && i + 1 < args.size()) app = args[++i];
        else if (args[i] == "--overflow" && i + 1 < args.size()) overflow = args[++i];
        else return usage_error("unknown argument for sessions create: " + args[i]);
      }
      const std::string id = c->create_session(system, app, overflow);
      if (o.json) std::printf("%s\n", c->call("GET", "/v1/sessions/" + id).body.c_str());
      else std::printf("%s\n", id.c_str());
      return kOk;
    }
    if (list) {
      if (o.json) {
        std::printf("%s\n", c->call("GET", "/v1/sessions").body.c_str());
        return kOk;
      }
      const auto sessions = c->sessions();
      if (sessions.empty()) std::printf("no sessions\n");
      for (const auto& s : sessions) print_session_line(s);
      return kOk;
    }
    if (show) {
      const llmc::SessionDetail d = c->session(args[1]);
      if (o.json) {
        std::printf("%s\n", d.json.c_str());
        return kOk;
      }
      print_session_line(d.session);
      print_session_kv(parse_answer(d.json));
      print_session_window(d.session);
      for (const auto& m : d.messages) std::printf("\n[%s]\n%s\n", m.role.c_str(), m.content.c_str());
      return kOk;
    }
    int rc = kOk;
    for (std::size_t i = 1; i < args.size(); ++i) {
      // A session that is not there does not stop the others; an unreachable daemon does.
      try {
        if (audit) {
          const std::string body = c->call("POST", "/v1/sessions/" + args[i] + "/audit").body;
          json j;
          try {
            j = json::parse(body);
          } catch (const std::exception&) {
            return bad_answer(200, body);
          }
          if (o.json) std::printf("%s\n", body.c_str());
          const bool ok = o.json ? j.value("ok", false) : print_audit(args[i], j);
          if (!ok) rc = kFailed;
          continue;
        }
        if (o.json) {
          std::printf("%s\n", c->call("DELETE", "/v1/sessions/" + args[i]).body.c_str());
        } else {
          c->delete_session(args[i]);
          std::printf("deleted %s\n", args[i].c_str());
        }
      } catch (const llmc::Error& e) {
        if (e.http_status() == 0) throw;
        rc = report(e);
      }
    }
    return rc;
  } catch (const llmc::Error& e) {
    return report(e);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (rest.empty() && a == "--socket") {
      if (i + 1 >= argc) return usage_error("--socket needs a PATH");
      o.socket = argv[++i];
    } else if (rest.empty() && a == "--json") {
      o.json = true;
    } else if (rest.empty() && (a == "--help" || a == "-h")) {
      std::fputs(kUsageText, stdout);
      return kOk;
    } else {
      rest.push_back(a);
    }
  }
  if (rest.empty()) return usage_error("no command given");

  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked read returns so the prompt can be redrawn
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  const std::string cmd = rest[0];
  std::vector<std::string> args(rest.begin() + 1, rest.end());
  if (cmd == "status" && args.empty()) return simple_get(o, "/v1/status", print_status);
  if (cmd == "models" && args.empty()) return simple_get(o, "/v1/models", print_models);
  if (cmd == "run") return cmd_run(o, args);
  if (cmd == "chat") return cmd_chat(o, args);
  if (cmd == "sessions") return cmd_sessions(o, args);
  if (cmd == "top") {
    return llmd::llmctl::cmd_top({o.socket, o.json, usage_error, report, bad_answer}, args);
  }
  return usage_error("unknown command or arguments: " + cmd);
}
