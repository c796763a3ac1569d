// Configuration parsing (see config.h).
#include "daemon/config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/program_options.hpp>

#include "core/service.h"

namespace llmd::daemon {
namespace po = boost::program_options;

namespace {

po::options_description settings(Config& c) {
  po::options_description d("Settings (each also a key in the config file)");
  d.add_options()
      ("model", po::value(&c.model), "GGUF model file to serve")
      ("socket", po::value(&c.socket)->default_value(c.socket), "Unix socket to bind (unless socket-activated)")
      ("bus", po::value(&c.bus)->default_value(c.bus),
       "D-Bus service org.llmd.LLM1 on: system, session, a bus address (unix:path=...), none; auto: the "
       "session bus if DBUS_SESSION_BUS_ADDRESS is set, else the system bus. A bus that cannot be reached "
       "leaves the socket serving alone")
      ("state-dir", po::value(&c.state_dir)->default_value(c.state_dir), "directory for sessions.db")
      ("threads", po::value(&c.threads)->default_value(c.threads), "inference threads (0: one per CPU)")
      ("slots", po::value(&c.slots)->default_value(c.slots), "sessions resident in the context at once")
      ("ctx", po::value(&c.ctx)->default_value(c.ctx), "KV cells shared by all slots (longest session)")
      ("batch", po::value(&c.batch)->default_value(c.batch), "most tokens decoded in one step (at most ctx)")
      ("flash-attn", po::value(&c.flash_attn)->default_value(c.flash_attn), "flash attention: auto, on, off")
      ("kv-type", po::value(&c.kv_type)->default_value(c.kv_type), "KV cache type: f16, q8_0, ...")
      ("restore", po::value(&c.restore)->default_value(c.restore),
       "how a session whose KV is not resident comes back: chunks (stored KV), recompute")
      ("chunk-tokens", po::value(&c.chunk_tokens)->default_value(c.chunk_tokens), "KV positions per stored chunk")
      ("kv-ram-mib", po::value(&c.kv_ram_mib)->default_value(c.kv_ram_mib),
       "budget of encoded KV chunks in RAM (T1), MiB; 0: none")
      ("kv-disk-mib", po::value(&c.kv_disk_mib)->default_value(c.kv_disk_mib),
       "budget of encoded KV chunks on disk (T2, state-dir/kv), MiB; 0: none")
      ("kv-policy", po::value(&c.kv_policy)->default_value(c.kv_policy),
       "codec per chunk: exact, position (sinks and recent exact, older compressed), attention (by the "
       "attention chunks receive; needs flash-attn = off), q8_0, q4_0")
      ("kv-target-ratio", po::value(&c.kv_target_ratio)->default_value(c.kv_target_ratio),
       "position policy: encoded bytes / exact bytes to aim for, (0, 1]")
      ("kv-disk-zstd", po::value(&c.kv_disk_zstd)->default_value(c.kv_disk_zstd),
       "zstd-compress exact chunks on disk")
      ("keep-resident", po::value(&c.keep_resident)->default_value(c.keep_resident),
       "keep idle sessions' KV in their slots (false: recompute every turn, the baseline)")
      ("scheduler", po::value(&c.scheduler)->default_value(c.scheduler),
       "how apps share the model: fair (virtual token counters), fifo (arrival order, the baseline)")
      ("weight", po::value(&c.weights)->composing(),
       "NAME=W: scheduling weight of a user (name or uid), or of one app of theirs (NAME/APP); repeatable; "
       "default 1")
      ("preempt-gap", po::value(&c.preempt_gap)->default_value(c.preempt_gap),
       "weighted tokens a client may be ahead of a waiting one before its running request is preempted "
       "(swapped out, resumed exactly later); 0: never")
      ("log-level", po::value(&c.log_level)->default_value(c.log_level), "trace, debug, info, warn, error")
      ("log-content", po::value(&c.log_content)->default_value(c.log_content),
       "log prompts and answers at debug level (off: text is never logged)")
      ("admin-group", po::value(&c.admin_group)->default_value(c.admin_group),
       "members of this group may see and manage every user's sessions")
      ("max-body-bytes", po::value(&c.max_body_bytes)->default_value(c.max_body_bytes), "largest request body")
      ("max-header-bytes", po::value(&c.max_header_bytes)->default_value(c.max_header_bytes), "largest request head")
      ("request-timeout-ms", po::value(&c.request_timeout_ms)->default_value(c.request_timeout_ms),
       "time a client has to send a whole request (also keep-alive idle time)")
      ("header-timeout-ms", po::value(&c.header_timeout_ms)->default_value(c.header_timeout_ms),
       "time a client has to send a request's head, from its first byte (a new connection: from the "
       "connect); at most request-timeout-ms takes effect")
      ("write-timeout-ms", po::value(&c.write_timeout_ms)->default_value(c.write_timeout_ms),
       "time a client may stop reading before it is dropped")
      ("max-connections", po::value(&c.max_connections)->default_value(c.max_connections), "open connections")
      ("max-connections-per-user",
       po::value(&c.max_connections_per_user)->default_value(c.max_connections_per_user),
       "open connections per uid (root is exempt; 0: no per-uid limit)")
      ("max-sessions-per-user", po::value(&c.max_sessions_per_user)->default_value(c.max_sessions_per_user),
       "stored sessions per uid")
      ("max-stored-mib-per-user", po::value(&c.max_stored_mib_per_user)->default_value(c.max_stored_mib_per_user),
       "MiB of stored sessions (messages and tokens) per uid")
      ("max-queued-per-client", po::value(&c.max_queued_per_client)->default_value(c.max_queued_per_client),
       "requests of one uid waiting for a slot at once")
      ("max-running-per-client", po::value(&c.max_running_per_client)->default_value(c.max_running_per_client),
       "slots one client may use at once (0: no limit)")
      ("max-prompt-tokens", po::value(&c.max_prompt_tokens)->default_value(c.max_prompt_tokens),
       "new tokens one request may bring (0: up to the context)")
      ("max-in-flight", po::value(&c.max_in_flight)->default_value(c.max_in_flight),
       "generation requests accepted or queued at once")
      ("disk-reserve-mib", po::value(&c.disk_reserve_mib)->default_value(c.disk_reserve_mib),
       "MiB the state directory's file system keeps free: below it, session creates and turns are refused "
       "(507) before anything is generated, and the KV chunk tier stops writing; 0: no reserve")
      ("default-max-tokens", po::value(&c.default_max_tokens)->default_value(c.default_max_tokens),
       "max_tokens when a request does not say")
      ("shutdown-timeout-ms", po::value(&c.shutdown_timeout_ms)->default_value(c.shutdown_timeout_ms),
       "on SIGTERM, how long running requests may finish before they are cancelled");
  return d;
}

po::options_description commands(Config& c) {
  po::options_description d("Commands");
  d.add_options()
      ("config", po::value(&c.config_file), "configuration file (default /etc/llmd/llmd.conf, if it exists)")
      ("help,h", "show this help")
      ("version", "print the version")
      ("check-config", "validate the configuration and the model file, then exit");
  return d;
}

Error bad(const std::string& key, const std::string& what) {
  return Error(Errc::invalid_argument, key + ": " + what);
}

// Boost's message of a program_options error. Boost fills its template's %placeholders% with the
// key and value as written, replacing until none is left, so a key or value that itself contains
// its placeholder ("a%original_token%b = 1", "slots = %value%") makes what() loop forever: llmd
// hung at start, and SIGHUP hung the io thread. Every '%' in what was written becomes "%25" first
// (a placeholder is '%' and a letter), which no placeholder matches.
std::string message_of(po::error& e) {
  struct Substitutions : po::error_with_option_name {
    static void make_safe(po::error_with_option_name& err) {
      for (auto& [name, value] : err.*(&Substitutions::m_substitutions)) {
        std::string safe;
        for (const char ch : value) safe += ch == '%' ? std::string("%25") : std::string(1, ch);
        value = std::move(safe);
      }
    }
  };
  if (auto* named = dynamic_cast<po::error_with_option_name*>(&e)) Substitutions::make_safe(*named);
  return e.what();
}

}  // namespace

Result<WeightEntry> parse_weight(const std::string& entry) {
  const auto eq = entry.rfind('=');
  if (eq == std::string::npos) return bad("weight", "'" + entry + "' is not NAME=W (e.g. alice=2, 1000/editor=0.5)");
  WeightEntry w;
  std::string who = entry.substr(0, eq);
  const std::string value = entry.substr(eq + 1);
  if (const auto slash = who.find('/'); slash != std::string::npos) {
    w.app = who.substr(slash + 1);
    who.resize(slash);
    if (!core::valid_client_name(w.app)) return bad("weight", "'" + entry + "': the app name must be 1-64 of A-Z a-z 0-9 . _ -");
  }
  if (!core::valid_client_name(who)) return bad("weight", "'" + entry + "': the user must be a user name or a uid");
  w.user = who;
  try {
    std::size_t used = 0;
    w.weight = std::stod(value, &used);
    if (used != value.size()) throw std::invalid_argument(value);
  } catch (const std::exception&) {
    return bad("weight", "'" + entry + "': the weight is not a number");
  }
  if (!(w.weight > 0 && w.weight <= 1000)) return bad("weight", "'" + entry + "': the weight must be in (0, 1000]");
  return w;
}

Status validate(const Config& c) {
  if (c.model.empty()) {
    return Error(Errc::invalid_argument,
                 "no model configured: pass --model PATH, set LLMD_MODEL, or set model = PATH in " + c.config_file);
  }
  if (c.socket.empty()) return bad("socket", "must not be empty");
  if (c.bus != "system" && c.bus != "session" && c.bus != "none" && c.bus != "auto" &&
      (c.bus.find(':') == std::string::npos || c.bus.find(':') == 0)) {
    return bad("bus",
               "must be system, session, auto, none or a D-Bus address such as unix:path=/run/dbus/system_bus_socket");
  }
  if (c.state_dir.empty()) return bad("state-dir", "must not be empty");
  if (c.threads < 0 || c.threads > 512) return bad("threads", "must be between 0 and 512");
  if (c.slots < 1 || c.slots > 256) return bad("slots", "must be between 1 and 256");
  if (c.ctx < 64 || c.ctx > (1u << 20)) return bad("ctx", "must be between 64 and 1048576");
  if (c.batch < 1 || c.batch > 65536) return bad("batch", "must be between 1 and 65536 (it is capped at ctx)");
  if (c.flash_attn != "auto" && c.flash_attn != "on" && c.flash_attn != "off") {
    return bad("flash-attn", "must be auto, on or off");
  }
  if (c.restore != "recompute" && c.restore != "chunks") return bad("restore", "must be chunks or recompute");
  if (c.chunk_tokens < 1 || c.chunk_tokens > 4096) return bad("chunk-tokens", "must be between 1 and 4096");
  if (c.kv_ram_mib > (1ull << 24)) return bad("kv-ram-mib", "must be at most 16777216 (16 TiB)");
  if (c.kv_disk_mib > (1ull << 26)) return bad("kv-disk-mib", "must be at most 67108864 (64 TiB)");
  if (c.kv_policy != "exact" && c.kv_policy != "position" && c.kv_policy != "attention" && c.kv_policy != "q8_0" &&
      c.kv_policy != "q4_0") {
    return bad("kv-policy", "must be exact, position, attention, q8_0 or q4_0");
  }
  if (c.kv_policy == "attention" && c.flash_attn != "off") {
    return bad("kv-policy", "attention needs flash-attn = off (flash attention never materialises the weights)");
  }
  if (!(c.kv_target_ratio > 0.0 && c.kv_target_ratio <= 1.0)) return bad("kv-target-ratio", "must be in (0, 1]");
  if (c.scheduler != "fair" && c.scheduler != "fifo") return bad("scheduler", "must be fair or fifo");
  for (const auto& w : c.weights) LLMD_TRY_STATUS(parse_weight(w));
  if (!(c.preempt_gap >= 0 && c.preempt_gap <= 1e12)) return bad("preempt-gap", "must be between 0 and 1e12");
  if (c.batch < c.slots) return bad("batch", "must be at least slots (every slot decodes a token per step)");
  if (c.max_stored_mib_per_user < 1 || c.max_stored_mib_per_user > (1ull << 30)) {
    return bad("max-stored-mib-per-user", "must be between 1 and 1073741824");
  }
  if (c.max_queued_per_client < 1) return bad("max-queued-per-client", "must be at least 1");
  if (c.log_level != "trace" && c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" &&
      c.log_level != "error") {
    return bad("log-level", "must be trace, debug, info, warn or error");
  }
  if (c.max_body_bytes < 1024 || c.max_body_bytes > (256ull << 20)) return bad("max-body-bytes", "must be between 1 KiB and 256 MiB");
  if (c.max_header_bytes < 1024 || c.max_header_bytes > (1u << 20)) return bad("max-header-bytes", "must be between 1 KiB and 1 MiB");
  if (c.request_timeout_ms < 100) return bad("request-timeout-ms", "must be at least 100");
  if (c.header_timeout_ms < 100) return bad("header-timeout-ms", "must be at least 100");
  if (c.write_timeout_ms < 100) return bad("write-timeout-ms", "must be at least 100");
  if (c.max_connections < 1) return bad("max-connections", "must be at least 1");
  if (c.max_sessions_per_user < 1) return bad("max-sessions-per-user", "must be at least 1");
  if (c.max_in_flight < 1) return bad("max-in-flight", "must be at least 1");
  if (c.disk_reserve_mib > (1ull << 30)) return bad("disk-reserve-mib", "must be at most 1073741824 (1 PiB)");
  if (c.default_max_tokens < 1 || static_cast<std::uint32_t>(c.default_max_tokens) > c.ctx) {
    return bad("default-max-tokens", "must be between 1 and ctx");
  }
  return {};
}

Result<ParsedArgs> parse_args(int argc, const char* const* argv) {
  ParsedArgs out;
  Config& c = out.config;
  po::options_description all;
  auto s = settings(c);
  auto cmds = commands(c);
  all.add(cmds).add(s);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).run(), vm);
    po::notify(vm);
    out.sources.push_back("command line");
    if (vm.count("help")) {
      std::ostringstream h;
      h << "usage: llmd [--config FILE] [--model PATH] [--socket PATH] [--state-dir DIR] [options]\n"
           "llmd serves one language model to every app on the machine over a Unix socket and D-Bus.\n\n"
        << cmds << "\n" << s;
      out.help = h.str();
      out.action = Action::help;
      return out;
    }
    if (vm.count("version")) {
      out.action = Action::version;
      return out;
    }
    if (vm.count("check-config")) out.action = Action::check_config;
    if (vm["model"].empty()) {
      if (const char* env = std::getenv("LLMD_MODEL"); env != nullptr && *env != '\0') {
        c.model = env;
        out.sources.push_back("LLMD_MODEL");
      }
    }
    const bool explicit_file = vm.count("config") != 0;
    if (explicit_file || std::filesystem::exists(c.config_file)) {
      std::ifstream f(c.config_file);
      if (!f) {
        return Error(explicit_file ? Errc::not_found : Errc::permission_denied,
                     "cannot read the configuration file " + c.config_file);
      }
      // Values already given on the command line (or LLMD_MODEL) stay: store() keeps the first.
      const std::string model_before = c.model;
      po::store(po::parse_config_file(f, s, /*allow_unregistered=*/false), vm);
      po::notify(vm);
      if (!model_before.empty()) c.model = model_before;
      out.sources.push_back(c.config_file);
    }
  } catch (po::error& e) {
    return Error(Errc::invalid_argument, message_of(e));
  }
  if (out.action == Action::run || out.action == Action::check_config) LLMD_TRY_STATUS(validate(c));
  return out;
}

std::string describe(const Config& c) {
  std::ostringstream o;
  o << "model = " << c.model << "\nsocket = " << c.socket << "\nbus = " << c.bus << "\nstate-dir = " << c.state_dir
    << "\nthreads = " << c.threads << "\nslots = " << c.slots << "\nctx = " << c.ctx << "\nbatch = " << c.batch
    << "\nflash-attn = " << c.flash_attn << "\nkv-type = " << c.kv_type << "\nrestore = " << c.restore
    << "\nchunk-tokens = " << c.chunk_tokens << "\nkv-ram-mib = " << c.kv_ram_mib << "\nkv-disk-mib = " << c.kv_disk_mib
    << "\nkv-policy = " << c.kv_policy << "\nkv-target-ratio = " << c.kv_target_ratio
    << "\nkv-disk-zstd = " << (c.kv_disk_zstd ? "true" : "false")
    << "\nkeep-resident = " << (c.keep_resident ? "true" : "false") << "\nscheduler = " << c.scheduler;
  for (const auto& w : c.weights) o << "\nweight = " << w;
  o << "\npreempt-gap = " << c.preempt_gap << "\nlog-level = " << c.log_level
    << "\nlog-content = " << (c.log_content ? "true" : "false") << "\nadmin-group = " << c.admin_group
    << "\nmax-body-bytes = " << c.max_body_bytes << "\nmax-header-bytes = " << c.max_header_bytes
    << "\nrequest-timeout-ms = " << c.request_timeout_ms << "\nheader-timeout-ms = " << c.header_timeout_ms
    << "\nwrite-timeout-ms = " << c.write_timeout_ms << "\nmax-connections = " << c.max_connections
    << "\nmax-connections-per-user = " << c.max_connections_per_user
    << "\nmax-sessions-per-user = " << c.max_sessions_per_user
    << "\nmax-stored-mib-per-user = " << c.max_stored_mib_per_user
    << "\nmax-queued-per-client = " << c.max_queued_per_client
    << "\nmax-running-per-client = " << c.max_running_per_client << "\nmax-prompt-tokens = " << c.max_prompt_tokens
    << "\nmax-in-flight = " << c.max_in_flight << "\ndisk-reserve-mib = " << c.disk_reserve_mib << "\ndefault-max-tokens = " << c.default_max_tokens
    << "\nshutdown-timeout-ms = " << c.shutdown_timeout_ms << "\n";
  return o.str();
}

}  // namespace llmd::daemon
