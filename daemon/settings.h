// The table of llmd's settings: one row per key, and the only place a key is described. Each row
// holds the key (its config-file spelling; the command-line flag is --KEY), its help text, whether
// SIGHUP applies it at once or it needs a restart, and, through the Config member it maps to, its
// type, its default (Config{}'s value), how its text is parsed, its range or allowed values and how
// it is printed. Everything else reads the table:
//
//   the command line and --help   config.cpp: one boost::program_options entry per row, grouped by
//                                 Reload (the man-page test reads the groups)
//   the config file               config.cpp: a key is looked up here, its value parsed by the row
//   validation                    validate(): every row's check, then the cross-key rules and the
//                                 model-free start-up checks (config.cpp)
//   --check-config and the log    describe(): every row's canonical text
//   SIGHUP                        App::reload: rows with Reload::restart keep their running value
//
// Adding a key: a member of Config (with its default) and one row in kSettings (settings.cpp).
//
// Thread-safety: the table is immutable after its first use (a function-local static); any thread
// may read it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "daemon/config.h"

namespace llmd::daemon {

// When a changed value takes effect.
enum class Reload {
  live,     // SIGHUP applies it at once
  restart,  // SIGHUP keeps the running value and warns; a restart applies it
};

struct Setting {
  std::string_view key;   // "max-body-bytes": the file's key and the command line's --key
  std::string_view help;  // one phrase for --help (the range is appended from the row)
  Reload reload = Reload::restart;
  bool repeatable = false;  // `weight`: every occurrence adds an entry (command line, then file)

  // Parses one occurrence's text into the field. Type errors only ("not a number", "not one of
  // ..."): the message, without the key. Ranges are check's.
  std::function<Status(Config&, std::string_view text)> parse;
  // The problem with the field's value (without the key: "must be between 1 and 256"), or nullopt.
  std::function<std::optional<std::string>(const Config&)> check;
  // The canonical text of the value, one entry per occurrence (none for an empty `weight`); what
  // parse reads back to the same value.
  std::function<std::vector<std::string>(const Config&)> format;
  // Whether two configurations hold the same value; and copying it from one to the other.
  std::function<bool(const Config&, const Config&)> same;
  std::function<void(Config& to, const Config& from)> copy;
  // The allowed values as the help shows them ("1 to 256", "auto, on, off"); empty: any.
  std::string range;
  // The default as --help shows it ("" for none: `model`).
  std::string default_text;
};

// Every setting, in --help and describe() order.
const std::vector<Setting>& settings();

// The row of a key, or null.
const Setting* find_setting(std::string_view key);

// A value or line as a message shows it: quoted, control characters as '?', cut after 80 bytes.
std::string shown_value(std::string_view text);

// The names of the enum values (what the file and command line accept, what describe prints).
std::string_view name_of(Restore r);
std::string_view name_of(LogLevel l);

// A setting's problem: which key, and what is wrong (without the key).
struct SettingProblem {
  std::string key;
  std::string message;
  std::string to_string() const { return key + ": " + message; }
};

// Every check llmd does on a configuration before it loads the model: each row's check, then the
// rules between keys (batch >= slots, kv-policy attention needs flash-attn off, default-max-tokens
// <= ctx, a model is configured), then the paths (state-dir, its kv/ with restore = chunks, and the
// socket's directory exist or can be created: no part of the path is a file; the socket path fits
// a sockaddr_un). Start-up
// (parse_args for Action::run), --check-config and SIGHUP all run exactly this. Permissions are not
// checked: --check-config is often run by another user than the service's.
std::optional<SettingProblem> check_config(const Config& config);

}  // namespace llmd::daemon
