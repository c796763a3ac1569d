// llmd's configuration: an INI file (default /etc/llmd/llmd.conf, `key = value` lines, '#'
// comments) where every key is also a command-line flag (--key value); the command line wins.
// The model may also come from the LLMD_MODEL environment variable (between the flag and the
// file). See llmd.conf(5) for every key; daemon/settings.h for the table that defines them (Config
// below holds their typed values and defaults).
//
// The file's format (parsed here, line by line, so that every error names FILE:LINE):
//   - blank lines and comments: '#' outside a quoted value starts a comment to the end of the line;
//   - KEY = VALUE, blank space around both trimmed; the first '=' separates them;
//   - a VALUE may be quoted whole, "..." or '...' (to keep '#', a quote or blank space at its
//     ends); a quote anywhere else is an error ("stray quote"), as are an unknown key, a
//     `[section]` line (the file has no sections), a line without '=', and a key given twice
//     (except `weight`, which adds an entry each time).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/context_window.h"
#include "engine/context.h"
#include "engine/ggml_types.h"
#include "kvstore/policy.h"
#include "scheduler/scheduler.h"

namespace llmd::daemon {

inline constexpr const char* kDefaultConfigFile = "/etc/llmd/llmd.conf";
inline constexpr const char* kVersion = "0.1.0";

// How a session whose KV is not resident comes back.
enum class Restore { chunks, recompute };
enum class LogLevel { trace, debug, info, warn, error };
// ggml's number for f16 (GGML_TYPE_F16), the default KV cache type; config_test checks it by name.
inline constexpr engine::GgmlType kKvTypeF16 = 1;

struct Config {
  std::string config_file = kDefaultConfigFile;
  std::string model;
  std::string socket = "/run/llmd/llmd.sock";
  std::string bus = "auto";            // D-Bus: system | session | ADDRESS | none | auto
  std::string state_dir = "/var/lib/llmd";
  std::int32_t threads = 0;            // 0: one per CPU
  std::uint32_t slots = 16;             // KV sequences: running, preempted and idle resident sessions
  std::uint32_t parallel = 4;           // generations decoded together (the running batch), at most slots
  std::uint32_t ctx = 4096;            // KV cells shared by all slots
  std::uint32_t batch = 512;           // most tokens in one decode step
  engine::FlashAttn flash_attn = engine::FlashAttn::automatic;
  engine::GgmlType kv_type = kKvTypeF16;  // a ggml type (by name in the file: f16, q8_0, ...)
  Restore restore = Restore::chunks;
  std::uint32_t chunk_tokens = 64;     // KV positions per chunk
  std::uint64_t kv_ram_mib = 1024;     // T1: encoded chunks in host RAM
  std::uint64_t kv_disk_mib = 8192;    // T2: encoded chunks on disk, under state-dir/kv
  kvstore::PolicyKind kv_policy = kvstore::PolicyKind::exact;
  double kv_target_ratio = 0.5;        // position policy: encoded / exact bytes
  bool kv_disk_zstd = false;           // zstd-compress exact chunks on disk
  std::uint64_t kv_write_back_mib = 256;  // queued write-backs of idle sessions, at most (MiB)
  std::uint32_t prefix_cache_entries_per_user = 256;  // stateless requests' histories kept per uid (0: off)
  std::uint64_t prefix_cache_mib_per_user = 1024;     // and their KV chunks' MiB per uid
  bool keep_resident = true;           // false: every turn recomputes its history (baseline)
  scheduler::Policy scheduler = scheduler::Policy::fair;  // fair (virtual token counters) | fifo (the baseline)
  std::vector<std::string> weights;    // "NAME=W": NAME a user name or uid, optionally "/APP"
  double preempt_gap = 0;              // counter lead (weighted tokens) that preempts; 0: at or below
  std::uint32_t prefill_chunk = 256;   // prompt tokens per step while generations decode; 0: batch
  double pace = 128;                   // counter lead (weighted tokens) past which a client sits steps out
  LogLevel log_level = LogLevel::info;
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
  // What a conversation that outgrows the context does (core/context_window.h): the default of
  // sessions created without a policy and of chat requests; the window's share after a move.
  core::Overflow context_overflow = core::Overflow::drop_oldest;
  std::uint32_t context_fill_target = 50;  // percent
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
// then, for Action::run and Action::check_config, validates (validate()). invalid_argument with a
// message naming the key for unknown keys, bad values, out-of-range numbers, prefixed with
// "FILE:LINE: " when the value (or the line) came from the file; not_found if an explicitly named
// config file does not exist, permission_denied if it cannot be read.
Result<ParsedArgs> parse_args(int argc, const char* const* argv);

// Every check start-up does before it loads the model (settings.h, check_config): ranges and
// allowed values of every key, the rules between keys, and the paths. invalid_argument, "KEY: ...".
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
