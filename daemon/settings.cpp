// The table of settings and the checks on a whole configuration (see settings.h).
#include "daemon/settings.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <limits>
#include <sstream>
#include <type_traits>
#include <utility>

#include "kvstore/chunk_store.h"

namespace llmd::daemon {
namespace {

Error type_error(const std::string& message) { return Error(Errc::invalid_argument, message); }

template <class T>
std::string number_text(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    std::ostringstream o;  // six significant digits, as describe() always printed them
    o << v;
    return o.str();
  } else {
    return std::to_string(v);
  }
}

// Decimal integers (an optional '+'; '-' only for signed types) and, for double, what
// std::from_chars reads (1.5, 1e3, inf). The whole text must be the number.
template <class T>
Result<T> parse_number(std::string_view text) {
  std::string_view digits = text;
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  const bool negative = !digits.empty() && digits.front() == '-';
  T v{};
  std::from_chars_result r{};
  if constexpr (std::is_floating_point_v<T>) {
    r = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  } else {
    if (negative && std::is_unsigned_v<T>) {
      return type_error(shown_value(text) + " is negative; it must be between 0 and " +
                        std::to_string(std::numeric_limits<T>::max()));
    }
    r = std::from_chars(digits.data(), digits.data() + digits.size(), v, 10);
  }
  if (r.ec == std::errc::result_out_of_range) {
    return type_error(shown_value(text) + " is out of range (" + number_text(std::numeric_limits<T>::lowest()) + " to " +
                      number_text(std::numeric_limits<T>::max()) + ")");
  }
  if (digits.empty() || r.ec != std::errc() || r.ptr != digits.data() + digits.size() ||
      (!digits.empty() && digits.front() == '+')) {
    return type_error(shown_value(text) + " is not a number");
  }
  return v;
}

// Booleans as boost::program_options read them before this table: true/false, yes/no, on/off,
// 1/0, in any case.
Result<bool> parse_bool(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") return true;
  if (lower == "false" || lower == "no" || lower == "off" || lower == "0") return false;
  return type_error(shown_value(text) + " is not a boolean (true, false, yes, no, on, off, 1, 0)");
}

template <class T>
auto same_field(T Config::*field) {
  return [field](const Config& a, const Config& b) { return a.*field == b.*field; };
}
template <class T>
auto copy_field(T Config::*field) {
  return [field](Config& to, const Config& from) { to.*field = from.*field; };
}

// A number in [lo, hi]; `message` replaces the generated "must be between LO and HI".
template <class T>
Setting number(std::string_view key, T Config::*field, T lo, T hi, Reload reload, std::string_view help,
               std::string message = {}, std::string range = {}) {
  Setting s;
  s.key = key;
  s.help = help;
  s.reload = reload;
  s.parse = [field](Config& c, std::string_view text) -> Status {
    auto v = parse_number<T>(text);
    if (!v) return v.error();
    c.*field = *v;
    return {};
  };
  constexpr T kMin = std::numeric_limits<T>::lowest(), kMax = std::numeric_limits<T>::max();
  const bool has_lo = lo != kMin && !(std::is_unsigned_v<T> && lo == 0);
  const bool has_hi = hi != kMax;
  if (message.empty()) {
    if (has_lo && has_hi) message = "must be between " + number_text(lo) + " and " + number_text(hi);
    else if (has_lo) message = "must be at least " + number_text(lo);
    else if (has_hi) message = "must be at most " + number_text(hi);
  }
  if (!range.empty()) s.range = std::move(range);
  else if (has_lo && has_hi) s.range = number_text(lo) + " to " + number_text(hi);
  else if (has_lo) s.range = "at least " + number_text(lo);
  else if (has_hi) s.range = number_text(lo) + " to " + number_text(hi);
  s.check = [field, lo, hi, message](const Config& c) -> std::optional<std::string> {
    const T v = c.*field;
    if (!(v >= lo && v <= hi)) return message;  // written so that NaN fails
    return std::nullopt;
  };
  s.format = [field](const Config& c) { return std::vector<std::string>{number_text(c.*field)}; };
  s.same = same_field(field);
  s.copy = copy_field(field);
  return s;
}

Setting flag(std::string_view key, bool Config::*field, Reload reload, std::string_view help) {
  Setting s;
  s.key = key;
  s.help = help;
  s.reload = reload;
  s.parse = [field](Config& c, std::string_view text) -> Status {
    auto v = parse_bool(text);
    if (!v) return v.error();
    c.*field = *v;
    return {};
  };
  s.check = [](const Config&) { return std::optional<std::string>(); };
  s.format = [field](const Config& c) { return std::vector<std::string>{c.*field ? "true" : "false"}; };
  s.same = same_field(field);
  s.copy = copy_field(field);
  s.range = "true or false";
  return s;
}

// Free text; `check` says what is wrong with a value, or nullopt.
Setting text(std::string_view key, std::string Config::*field, Reload reload, std::string_view help,
             std::function<std::optional<std::string>(const std::string&)> check) {
  Setting s;
  s.key = key;
  s.help = help;
  s.reload = reload;
  s.parse = [field](Config& c, std::string_view text) -> Status {
    c.*field = std::string(text);
    return {};
  };
  s.check = [field, check = std::move(check)](const Config& c) { return check(c.*field); };
  s.format = [field](const Config& c) { return std::vector<std::string>{c.*field}; };
  s.same = same_field(field);
  s.copy = copy_field(field);
  return s;
}

// One of a fixed set of names, each an enum value.
template <class E>
Setting choice(std::string_view key, E Config::*field, std::vector<std::pair<std::string_view, E>> names,
               Reload reload, std::string_view help) {
  Setting s;
  s.key = key;
  s.help = help;
  s.reload = reload;
  std::string list;
  for (std::size_t i = 0; i < names.size(); ++i) {
    list += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + std::string(names[i].first);
  }
  s.range = list;
  s.parse = [field, names, list](Config& c, std::string_view text) -> Status {
    for (const auto& [name, value] : names) {
      if (text == name) {
        c.*field = value;
        return {};
      }
    }
    return type_error(shown_value(text) + " is not one of " + list);
  };
  s.check = [field, names, list](const Config& c) -> std::optional<std::string> {
    for (const auto& [name, value] : names) {
      if (c.*field == value) return std::nullopt;
    }
    return "must be " + list;
  };
  s.format = [field, names](const Config& c) {
    for (const auto& [name, value] : names) {
      if (c.*field == value) return std::vector<std::string>{std::string(name)};
    }
    return std::vector<std::string>{"?"};
  };
  s.same = same_field(field);
  s.copy = copy_field(field);
  return s;
}

// The KV cache's ggml type, by ggml's name (llama.cpp accepts any type for the cache).
Setting kv_type_setting(Reload reload, std::string_view help) {
  Setting s;
  s.key = "kv-type";
  s.help = help;
  s.reload = reload;
  s.range = "a ggml type: f16, bf16, f32, q8_0, q4_0, ...";
  s.parse = [](Config& c, std::string_view text) -> Status {
    auto t = engine::ggml_type_from_name(text);
    if (!t) return type_error(shown_value(text) + " is not a ggml type (f16, bf16, f32, q8_0, q4_0, ...)");
    c.kv_type = *t;
    return {};
  };
  s.check = [](const Config& c) -> std::optional<std::string> {
    const std::string name = engine::ggml_type_to_name(c.kv_type);
    if (!engine::ggml_type_from_name(name)) return "must be a ggml type (f16, bf16, f32, q8_0, q4_0, ...)";
    return std::nullopt;
  };
  s.format = [](const Config& c) { return std::vector<std::string>{engine::ggml_type_to_name(c.kv_type)}; };
  s.same = same_field(&Config::kv_type);
  s.copy = copy_field(&Config::kv_type);
  return s;
}

Setting weight_setting(Reload reload, std::string_view help) {
  Setting s;
  s.key = "weight";
  s.help = help;
  s.reload = reload;
  s.repeatable = true;
  s.range = "NAME=W, W in (0, 1000]";
  // parse_weight's messages start with "weight: "; the key is added where the message is shown.
  auto without_key = [](const Error& e) {
    const std::string& m = e.message();
    return m.rfind("weight: ", 0) == 0 ? m.substr(8) : m;
  };
  s.parse = [without_key](Config& c, std::string_view text) -> Status {
    auto w = parse_weight(std::string(text));
    if (!w) return type_error(without_key(w.error()));
    c.weights.emplace_back(text);
    return {};
  };
  s.check = [without_key](const Config& c) -> std::optional<std::string> {
    for (const auto& w : c.weights) {
      if (auto parsed = parse_weight(w); !parsed) return without_key(parsed.error());
    }
    return std::nullopt;
  };
  s.format = [](const Config& c) { return c.weights; };
  s.same = same_field(&Config::weights);
  s.copy = copy_field(&Config::weights);
  return s;
}

std::optional<std::string> not_empty(const std::string& v) {
  if (v.empty()) return "must not be empty";
  return std::nullopt;
}

std::optional<std::string> any_text(const std::string&) { return std::nullopt; }

std::optional<std::string> bus_address(const std::string& v) {
  if (v == "system" || v == "session" || v == "none" || v == "auto") return std::nullopt;
  if (v.find(':') == std::string::npos || v.find(':') == 0) {
    return "must be system, session, auto, none or a D-Bus address such as unix:path=/run/dbus/system_bus_socket";
  }
  return std::nullopt;
}

// A group name as getgrnam(3) could find it: no ':' (the group file's separator), no blank or
// control character, no '/'.
std::optional<std::string> group_name(const std::string& v) {
  const bool ok = !v.empty() && v.size() <= 256 && std::none_of(v.begin(), v.end(), [](char ch) {
    return static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f || ch == ':' || ch == '/';
  });
  if (!ok) return "must be a group name (1 to 256 characters, no blank, ':' or '/')";
  return std::nullopt;
}

constexpr std::uint64_t kMiB = 1ull << 20;

// The engine's and the KV store's own limits are the ranges here, so that a value the table accepts
// is not refused later by Context::create or ChunkStore::open.
std::vector<Setting> make_settings() {
  using R = Reload;
  constexpr auto kU32Max = std::numeric_limits<std::uint32_t>::max();
  std::vector<Setting> t = {
      text("model", &Config::model, R::restart, "GGUF model file to serve", any_text),
      text("socket", &Config::socket, R::restart, "Unix socket to bind (unless socket-activated)", not_empty),
      text("bus", &Config::bus, R::restart,
           "D-Bus service org.llmd.LLM1 on: system, session, a bus address (unix:path=...), none; auto: the session "
           "bus if DBUS_SESSION_BUS_ADDRESS is set, else the system bus. A bus that cannot be reached leaves the "
           "socket serving alone",
           bus_address),
      text("state-dir", &Config::state_dir, R::restart, "directory for sessions.db", not_empty),
      number<std::int32_t>("threads", &Config::threads, 0, engine::kMaxThreads, R::restart, "inference threads (0: one per CPU)"),
      number<std::uint32_t>("slots", &Config::slots, 1, engine::kMaxSlots, R::restart,
                            "sessions resident in the context at once: running, preempted and idle ones"),
      number<std::uint32_t>("parallel", &Config::parallel, 1, engine::kMaxSlots, R::restart,
                            "generations decoded together, the running batch (at most slots)"),
      number<std::uint32_t>("ctx", &Config::ctx, 64, engine::kMaxContext, R::restart,
                            "KV cells shared by all slots (longest session)"),
      number<std::uint32_t>("batch", &Config::batch, 1, 65536, R::restart,
                            "most tokens decoded in one step (at least parallel; capped at ctx)",
                            "must be between 1 and 65536 (it is capped at ctx)"),
      choice<engine::FlashAttn>("flash-attn", &Config::flash_attn,
                                {{"auto", engine::FlashAttn::automatic},
                                 {"on", engine::FlashAttn::on},
                                 {"off", engine::FlashAttn::off}},
                                R::restart, "flash attention"),
      kv_type_setting(R::restart, "KV cache type"),
      choice<Restore>("restore", &Config::restore, {{"chunks", Restore::chunks}, {"recompute", Restore::recompute}},
                      R::restart, "how a session whose KV is not resident comes back: chunks (stored KV), recompute"),
      number<std::uint32_t>("chunk-tokens", &Config::chunk_tokens, 1, kvstore::kMaxChunkTokens,
                            R::restart, "KV positions per stored chunk"),
      number<std::uint64_t>("kv-ram-mib", &Config::kv_ram_mib, 0, 1ull << 24, R::restart,
                            "budget of encoded KV chunks in RAM (T1), MiB; 0: none",
                            "must be at most 16777216 (16 TiB)"),
      number<std::uint64_t>("kv-disk-mib", &Config::kv_disk_mib, 0, 1ull << 26, R::restart,
                            "budget of encoded KV chunks on disk (T2, state-dir/kv), MiB; 0: none",
                            "must be at most 67108864 (64 TiB)"),
      choice<kvstore::PolicyKind>("kv-policy", &Config::kv_policy,
                                  {{"exact", kvstore::PolicyKind::exact},
                                   {"position", kvstore::PolicyKind::position},
                                   {"attention", kvstore::PolicyKind::attention},
                                   {"q8_0", kvstore::PolicyKind::q8_0},
                                   {"q4_0", kvstore::PolicyKind::q4_0},
                                   {"kivi8", kvstore::PolicyKind::kivi8},
                                   {"kivi4", kvstore::PolicyKind::kivi4},
                                   {"kivi2", kvstore::PolicyKind::kivi2}},
                                  R::restart,
                                  "codec per chunk: exact, position (sinks and recent exact, older down an "
                                  "8/4/2-bit ladder), attention (by the attention chunks receive; needs "
                                  "flash-attn = off), or one codec for all: q8_0, q4_0, kivi8, kivi4, kivi2"),
      number<double>("kv-target-ratio", &Config::kv_target_ratio, std::numeric_limits<double>::denorm_min(), 1.0,
                     R::restart, "position and attention policies: encoded bytes / exact bytes to aim for", "must be in (0, 1]",
                     "(0, 1]"),
      flag("kv-disk-zstd", &Config::kv_disk_zstd, R::restart, "zstd-compress exact chunks on disk"),
      number<std::uint64_t>("kv-write-back-mib", &Config::kv_write_back_mib, 1, 1ull << 24, R::restart,
                            "sequence states queued for write-back, MiB; past it the oldest of a session not in "
                            "use is dropped (recomputed on its next turn)",
                            "must be at most 16777216 (16 TiB)"),
      number<std::uint32_t>("prefix-cache-entries-per-user", &Config::prefix_cache_entries_per_user, 0, 1u << 20,
                            R::restart,
                            "stateless requests' histories whose KV a uid keeps for reuse, least recently used "
                            "dropped first (0: none kept, every stateless request is computed whole)",
                            "must be at most 1048576"),
      number<std::uint64_t>("prefix-cache-mib-per-user", &Config::prefix_cache_mib_per_user, 1, 1ull << 24,
                            R::restart,
                            "MiB of KV chunks (RAM and disk copies) a uid's stateless histories may hold",
                            "must be at most 16777216 (16 TiB)"),
      flag("keep-resident", &Config::keep_resident, R::restart,
           "keep idle sessions' KV in their slots (false: recompute every turn, the baseline)"),
      choice<scheduler::Policy>("scheduler", &Config::scheduler,
                                {{"fair", scheduler::Policy::fair}, {"fifo", scheduler::Policy::fifo}}, R::restart,
                                "how apps share the model: fair (virtual token counters), fifo (arrival order, the "
                                "baseline)"),
      weight_setting(R::restart,
                     "NAME=W: scheduling weight of a user (name or uid), or of one app of theirs (NAME/APP); "
                     "repeatable; default 1"),
      number<double>("preempt-gap", &Config::preempt_gap, 0, 1e12, R::restart,
                     "how far (weighted tokens) a running client's counter must be ahead of a waiting "
                     "client's for its generation to be preempted (its KV stays resident while it can, it "
                     "resumes exactly); 0: as soon as the waiting client is not ahead; 1e12: never",
                     "must be between 0 and 1e12"),
      number<std::uint32_t>("prefill-chunk", &Config::prefill_chunk, 0, 65536, R::restart,
                            "prompt tokens one step carries while generations decode in it, so a long prompt "
                            "never holds their next tokens back for long (0: up to batch)",
                            "must be between 0 and 65536"),
      number<double>("pace", &Config::pace, 0, 1e12, R::restart,
                     "how far (weighted tokens) a client's counter may run ahead of the lowest counter among "
                     "the clients running work before its requests sit steps out (no decode, no prompt), so "
                     "the one behind is not slowed by it; 1e12: never",
                     "must be between 0 and 1e12"),
      choice<LogLevel>("log-level", &Config::log_level,
                       {{"trace", LogLevel::trace},
                        {"debug", LogLevel::debug},
                        {"info", LogLevel::info},
                        {"warn", LogLevel::warn},
                        {"error", LogLevel::error}},
                       R::live, "what is logged"),
      flag("log-content", &Config::log_content, R::live,
           "log prompts and answers at debug level (off: text is never logged)"),
      text("admin-group", &Config::admin_group, R::restart,
           "members of this group may see and manage every user's sessions", group_name),
      number<std::uint64_t>("max-body-bytes", &Config::max_body_bytes, 1024, 256 * kMiB, R::live,
                            "largest request body", "must be between 1 KiB and 256 MiB"),
      number<std::uint64_t>("max-header-bytes", &Config::max_header_bytes, 1024, kMiB, R::live,
                            "largest request head", "must be between 1 KiB and 1 MiB"),
      number<std::uint32_t>("request-timeout-ms", &Config::request_timeout_ms, 100, kU32Max, R::live,
                            "time a client has to send a whole request (also keep-alive idle time)"),
      number<std::uint32_t>("header-timeout-ms", &Config::header_timeout_ms, 100, kU32Max, R::live,
                            "time a client has to send a request's head, from its first byte (a new connection: "
                            "from the connect); at most request-timeout-ms takes effect"),
      number<std::uint32_t>("write-timeout-ms", &Config::write_timeout_ms, 100, kU32Max, R::live,
                            "time a client may stop reading before it is dropped"),
      number<std::uint32_t>("max-connections", &Config::max_connections, 1, kU32Max, R::live, "open connections"),
      number<std::uint32_t>("max-connections-per-user", &Config::max_connections_per_user, 0, kU32Max, R::live,
                            "open connections per uid (root is exempt; 0: no per-uid limit)"),
      number<std::uint32_t>("max-sessions-per-user", &Config::max_sessions_per_user, 1, kU32Max, R::live,
                            "stored sessions per uid"),
      number<std::uint64_t>("max-stored-mib-per-user", &Config::max_stored_mib_per_user, 1, 1ull << 30, R::live,
                            "MiB of stored sessions (messages and tokens) per uid"),
      number<std::uint32_t>("max-queued-per-client", &Config::max_queued_per_client, 1, kU32Max, R::live,
                            "requests of one uid waiting for a slot at once"),
      number<std::uint32_t>("max-running-per-client", &Config::max_running_per_client, 0, kU32Max, R::restart,
                            "slots one client may use at once (0: no limit)"),
      number<std::uint32_t>("max-prompt-tokens", &Config::max_prompt_tokens, 0, kU32Max, R::live,
                            "new tokens one request may bring (0: up to the context)"),
      number<std::uint32_t>("max-in-flight", &Config::max_in_flight, 1, kU32Max, R::live,
                            "generation requests accepted or queued at once"),
      number<std::uint64_t>("disk-reserve-mib", &Config::disk_reserve_mib, 0, 1ull << 30, R::live,
                            "MiB the state directory's file system keeps free: below it, session creates and turns "
                            "are refused (507) before anything is generated, and the KV chunk tier stops writing; "
                            "0: no reserve",
                            "must be at most 1073741824 (1 PiB)"),
      number<std::int32_t>("default-max-tokens", &Config::default_max_tokens, 1,
                           std::numeric_limits<std::int32_t>::max(), R::live,
                           "max_tokens when a request does not say (at most ctx)", "must be between 1 and ctx"),
      choice<core::Overflow>("context-overflow", &Config::context_overflow,
                             {{"error", core::Overflow::error},
                              {"drop_oldest", core::Overflow::drop_oldest},
                              {"sliding", core::Overflow::sliding}},
                             R::live,
                             "what a conversation that outgrows the context does, for sessions created without a "
                             "policy and chat requests without one: error (400 context_length_exceeded), "
                             "drop_oldest (the oldest whole turns leave the model's window and the kept ones are "
                             "recomputed; the transcript stays whole), sliding (sessions: the same turns leave, the "
                             "kept ones' KV is shifted instead of recomputed; stateless requests drop_oldest)"),
      number<std::uint32_t>("context-fill-target", &Config::context_fill_target, 10, 100, R::live,
                            "percent of a sequence the window holds at most after drop_oldest moved it (the rest is "
                            "room for answers and later turns)"),
      number<std::uint32_t>("shutdown-timeout-ms", &Config::shutdown_timeout_ms, 0, kU32Max, R::live,
                            "on SIGTERM, how long running requests may finish before they are cancelled"),
  };
  const Config defaults;
  for (auto& s : t) {
    const auto d = s.format(defaults);
    s.default_text = d.empty() ? "" : d.front();
  }
  return t;
}

// The path is a directory, or could be made one: its nearest existing ancestor is a directory.
// What makes it impossible, or nullopt (also when a path cannot be examined: permissions are the
// running user's, not necessarily the service's).
std::optional<std::string> creatable_dir(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p = path;
  bool first = true;
  while (true) {
    struct stat st {};
    const std::string s = p.empty() ? std::string(".") : p.string();
    if (::stat(s.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) return std::nullopt;
      return first ? "'" + s + "' exists and is not a directory"
                   : "cannot be created: '" + s + "' is not a directory";
    }
    if (errno != ENOENT && errno != ENOTDIR) return std::nullopt;
    if (p.empty() || p == p.root_path()) return std::nullopt;
    p = p.parent_path();
    first = false;
  }
}

}  // namespace

std::string shown_value(std::string_view text) {
  std::string out;
  for (const char ch : text.substr(0, 80)) out += (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ? '?' : ch;
  if (text.size() > 80) out += "...";
  return "'" + out + "'";
}

const std::vector<Setting>& settings() {
  static const std::vector<Setting> table = make_settings();
  return table;
}

const Setting* find_setting(std::string_view key) {
  for (const auto& s : settings()) {
    if (s.key == key) return &s;
  }
  return nullptr;
}

std::string_view name_of(Restore r) { return r == Restore::recompute ? "recompute" : "chunks"; }

std::string_view name_of(LogLevel l) {
  switch (l) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

std::optional<SettingProblem> check_config(const Config& c) {
  if (c.model.empty()) {
    return SettingProblem{"model", "no model configured: pass --model PATH, set LLMD_MODEL, or set model = PATH in " +
                                  c.config_file};
  }
  for (const auto& s : settings()) {
    if (auto problem = s.check(c)) return SettingProblem{std::string(s.key), *problem};
  }
  // Between keys.
  if (c.kv_policy == kvstore::PolicyKind::attention && c.flash_attn != engine::FlashAttn::off) {
    return SettingProblem{"kv-policy",
                          "attention needs flash-attn = off (flash attention never materialises the weights)"};
  }
  if (c.batch < std::min(c.parallel, c.slots)) {
    return SettingProblem{"batch", "must be at least parallel (every running generation decodes a token per step)"};
  }
  if (static_cast<std::uint32_t>(c.default_max_tokens) > c.ctx) {
    return SettingProblem{"default-max-tokens", "must be between 1 and ctx"};
  }
  // Paths start-up will create or bind.
  if (auto problem = creatable_dir(c.state_dir)) return SettingProblem{"state-dir", *problem};
  if (c.restore == Restore::chunks) {
    if (auto problem = creatable_dir((std::filesystem::path(c.state_dir) / "kv").string())) {
      return SettingProblem{"state-dir", "the KV chunk store's directory " + *problem};
    }
  }
  if (c.socket.size() >= sizeof(sockaddr_un::sun_path)) {
    return SettingProblem{"socket", "must be at most " + std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                                        " bytes (a Unix socket address)"};
  }
  const auto socket_dir = std::filesystem::path(c.socket).parent_path().string();
  if (auto problem = creatable_dir(socket_dir.empty() ? "." : socket_dir)) {
    return SettingProblem{"socket", "its directory " + *problem};
  }
  return std::nullopt;
}

}  // namespace llmd::daemon
