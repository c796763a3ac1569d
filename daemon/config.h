// llmd's configuration: an INI file (default /etc/llmd/llmd.conf, `key = value` lines, '#'
// comments) where every key is also a command-line flag (--key value); the command line wins.
// The model may also come from the LLMD_MODEL environment variable (between the flag and the
// file). See llmd.conf(5) for every key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace llmd::daemon {

inline constexpr const char* kDefaultConfigFile = "/etc/llmd/llmd.conf";
inline constexpr const char* kVersion = "0.1.0";

struct Config {
  std::string config_file = kDefaultConfigFile;
  std::string model;
  std::string socket = "/run/llmd/llmd.sock";
  std::string bus = "auto";            // D-Bus: system | session | ADDRESS | none | auto
  std::string state_dir = "/var/lib/llmd";
  std::int32_t threads = 0;            // 0: one per CPU
  std::uint32_t slots = 4;
  std::uint32_t ctx = 4096;            // KV cells shared by all slots
  std::uint32_t batch = 512;           // most tokens in one decode step
  std::string flash_attn = "auto";     // auto | on | off
  std::string kv_type = "f16";
  std::string restore = "chunks";      // how a non-resident session's KV comes back: chunks | recompute
  std::uint32_t chunk_tokens = 64;     // KV positions per chunk
  std::uint64_t kv_ram_mib = 1024;     // T1: encoded chunks in host RAM
  std::uint64_t kv_disk_mib = 8192;    // T2: encoded chunks on disk, under state-dir/kv
  std::string kv_policy = "exact";     // exact | position | attention | q8_0 | q4_0
  double kv_target_ratio = 0.5;        // position policy: encoded / exact bytes
  bool kv_disk_zstd = false;           // zstd-compress exact chunks on disk
  bool keep_resident = true;           // false: every turn recomputes its history (baseline)
  std::string scheduler = "fair";      // fair (virtual token counters) | fifo (the baseline)
  std::vector<std::string> weights;    // "NAME=W": NAME a user name or uid, optionally "/APP"
  double preempt_gap = 4096;           // counter lead (weighted tokens) that preempts; 0: never for fairness
  std::string log_level = "info";      // trace | debug | info | warn | error
  bool log_content = false;            // log prompts and answers (debug level); off by default
  std::string admin_group = "llmd-admin";
  // Limits.
  std::uint64_t max_body_bytes = 1u << 20;
  std::uint64_t max_header_bytes = 16u << 10;
  std::uint32_t request_timeout_ms = 10'000;
  std::uint32_t header_timeout_ms = 3'000;      // a request's head, from its first byte
  std::uint32_t write_timeout_ms = 30'000;
  std::uint32_t max_connections = 256;
  std::uint32_t max_connections_per_user = 32;  // per uid, root exempt; 0: no per-uid limit
  std::uint32_t max_sessions_per_user = 1024;
  std::uint64_t max_stored_mib_per_user = 1024;  // sessions' messages and tokens
  std::uint32_t max_queued_per_client = 64;     // requests waiting beyond the running ones
  std::uint32_t max_running_per_client = 0;     // slots one client may hold at once; 0: any
  std::uint32_t max_prompt_tokens = 0;          // one request's new tokens; 0: up to the context
  std::uint32_t max_in_flight = 256;
  std::uint64_t disk_reserve_mib = 256;         // free space the state dir's file system keeps
  std::int32_t default_max_tokens = 256;
  std::uint32_t shutdown_timeout_ms = 10'000;
};

enum class Action { run, help, version, check_config };

struct ParsedArgs {
  Config config;
  Action action = Action::run;
  std::string help;       // usage text, for Action::help
  std::vector<std::string> sources;  // what was read: "command line", "LLMD_MODEL", the file
};

// Parses argv (and the config file it names, or the default one if it exists, and LLMD_MODEL),
// then validates. invalid_argument with a message naming the key for unknown keys, bad values,
// out-of-range numbers; not_found if an explicitly named config file does not exist.
Result<ParsedArgs> parse_args(int argc, const char* const* argv);

// Range and consistency checks (also run by parse_args).
Status validate(const Config& config);

// A parsed `weight` entry: who ("alice", "1000", "alice/editor") and the weight.
struct WeightEntry {
  std::string user;  // a user name or a uid
  std::string app;   // empty: every app of the user
  double weight = 1;
};
Result<WeightEntry> parse_weight(const std::string& entry);

// The effective configuration as `key = value` lines (for --check-config and the log).
std::string describe(const Config& config);

}  // namespace llmd::daemon
