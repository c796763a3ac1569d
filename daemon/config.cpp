// Configuration parsing: the command line (boost::program_options, one entry per row of the
// settings table), the config file (read here, line by line, for FILE:LINE in every message), and
// describe() (see config.h).
#include "daemon/config.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <boost/program_options.hpp>

#include "core/service.h"
#include "daemon/settings.h"

namespace llmd::daemon {
namespace po = boost::program_options;

namespace {

Error bad(const std::string& key, const std::string& what) {
  return Error(Errc::invalid_argument, key + ": " + what);
}

constexpr std::string_view kBlank = " \t\r\v\f";

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(kBlank);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kBlank) - b + 1);
}

// The key at most two edits away from a misspelt one ("slotz" -> "slots"), or "".
std::string_view nearest_key(std::string_view key) {
  std::string_view best;
  std::size_t best_distance = 3;
  for (const auto& s : settings()) {
    // Levenshtein distance, one row at a time.
    std::vector<std::size_t> row(s.key.size() + 1);
    for (std::size_t j = 0; j <= s.key.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= key.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= s.key.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (key[i - 1] == s.key[j - 1] ? 0 : 1)});
        diagonal = up;
      }
    }
    if (row.back() < best_distance) {
      best_distance = row.back();
      best = s.key;
    }
  }
  return best;
}

bool is_quote(char ch) { return ch == '"' || ch == '\''; }

// One `KEY = VALUE` line of the file.
struct FileEntry {
  const Setting* setting;
  std::string value;
  int line;
};

// The file's entries, in order; invalid_argument "FILE:LINE: ..." for the first line that is not
// blank, a comment or a known KEY = VALUE (config.h has the format).
Result<std::vector<FileEntry>> read_config_file(std::istream& in, const std::string& file) {
  std::vector<FileEntry> out;
  std::map<std::string_view, int> first_line;  // non-repeatable keys seen
  std::string raw;
  for (int n = 1; std::getline(in, raw); ++n) {
    const std::string where = file + ":" + std::to_string(n) + ": ";
    auto fail = [&](const std::string& what) { return Error(Errc::invalid_argument, where + what); };
    const std::string_view line = trim(raw);
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == '[') {
      return fail("sections such as " + shown_value(line) + " are not part of llmd.conf: every key is top-level; "
                  "write KEY = VALUE lines only");
    }
    const auto eq = line.find('=');
    const auto hash = line.find('#');
    if (eq == std::string_view::npos || (hash != std::string_view::npos && hash < eq)) {
      return fail("expected KEY = VALUE, found " + shown_value(line));
    }
    const std::string_view key = trim(line.substr(0, eq));
    if (key.empty()) return fail("a value without a key: " + shown_value(line));
    const Setting* setting = find_setting(key);
    if (setting == nullptr) {
      const auto near = nearest_key(key);
      return fail("unknown key " + shown_value(key) + (near.empty() ? "" : " (did you mean " + std::string(near) + "?)"));
    }
    const std::string k(key);
    std::string_view rest = trim(line.substr(eq + 1));
    std::string value;
    if (!rest.empty() && is_quote(rest.front())) {
      const auto close = rest.find(rest.front(), 1);
      if (close == std::string_view::npos) {
        return fail(k + ": stray quote: " + shown_value(rest) + " has no closing " + std::string(1, rest.front()));
      }
      value = std::string(rest.substr(1, close - 1));
      const std::string_view after = trim(rest.substr(close + 1));
      if (!after.empty() && after.front() != '#') {
        return fail(k + ": stray quote: text after the quoted value " + shown_value(rest) +
                    " (quote the whole value or none of it)");
      }
    } else {
      value = std::string(trim(rest.substr(0, rest.find('#'))));
      if (std::any_of(value.begin(), value.end(), is_quote)) {
        return fail(k + ": stray quote in " + shown_value(value) + " (quote the whole value, " + k +
                    " = \"...\", or none of it)");
      }
    }
    if (!setting->repeatable) {
      if (auto [it, fresh] = first_line.emplace(setting->key, n); !fresh) {
        return fail(k + " is set twice (first on line " + std::to_string(it->second) + "); only weight may repeat");
      }
    }
    out.push_back({setting, std::move(value), n});
  }
  return out;
}

// A value as describe() writes it: quoted when the file's reader would otherwise change it.
std::string file_value(const std::string& v) {
  const bool plain = v.find('#') == std::string::npos && std::none_of(v.begin(), v.end(), is_quote) &&
                     (v.empty() || (kBlank.find(v.front()) == std::string_view::npos &&
                                    kBlank.find(v.back()) == std::string_view::npos));
  if (plain) return v;
  return v.find('"') == std::string::npos ? "\"" + v + "\"" : "'" + v + "'";
}

// The --help entry of a setting.
std::string help_of(const Setting& s) {
  std::string h(s.help);
  if (!s.range.empty()) h += " [" + s.range + "]";
  return h;
}

void add_option(po::options_description& d, const Setting& s, std::vector<std::string>& helps) {
  helps.push_back(help_of(s));
  const std::string& help = helps.back();
  if (s.repeatable) {
    d.add_options()(s.key.data(), po::value<std::vector<std::string>>()->composing(), help.c_str());
  } else if (s.default_text.empty()) {
    d.add_options()(s.key.data(), po::value<std::string>(), help.c_str());
  } else {
    d.add_options()(s.key.data(), po::value<std::string>()->default_value(s.default_text), help.c_str());
  }
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
  if (auto problem = check_config(c)) return Error(Errc::invalid_argument, problem->to_string());
  return {};
}

Result<ParsedArgs> parse_args(int argc, const char* const* argv) {
  ParsedArgs out;
  Config& c = out.config;
  po::options_description cmds("Commands");
  cmds.add_options()
      ("config", po::value(&c.config_file), "configuration file (default /etc/llmd/llmd.conf, if it exists)")
      ("help,h", "show this help")
      ("version", "print the version")
      ("check-config", "run start-up's checks of the configuration (every key, the rules between keys, the "
                       "paths), then validate the model file, print the effective configuration and exit");
  // Two groups, by what SIGHUP does (the man-page test reads them). Keys are literals: .data()
  // is NUL-terminated.
  po::options_description live("Settings applied at once on SIGHUP (each also a key in the config file)");
  po::options_description restart("Settings that need a restart (each also a key in the config file)");
  std::vector<std::string> helps;
  helps.reserve(settings().size());
  for (const auto& s : settings()) add_option(s.reload == Reload::live ? live : restart, s, helps);
  po::options_description all;
  all.add(cmds).add(live).add(restart);
  po::variables_map vm;
  // Where each key's value came from, for messages: "FILE:LINE" (absent: the command line).
  std::map<std::string, std::string> origin;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).run(), vm);
    po::notify(vm);
  } catch (po::error& e) {
    return Error(Errc::invalid_argument, message_of(e));
  }
  out.sources.push_back("command line");
  if (vm.count("help")) {
    std::ostringstream h;
    h << "usage: llmd [--config FILE] [--model PATH] [--socket PATH] [--state-dir DIR] [options]\n"
         "llmd serves one language model to every app on the machine over a Unix socket and D-Bus.\n\n"
      << cmds << "\n" << live << "\n" << restart;
    out.help = h.str();
    out.action = Action::help;
    return out;
  }
  if (vm.count("version")) {
    out.action = Action::version;
    return out;
  }
  if (vm.count("check-config")) out.action = Action::check_config;

  // The command line first: it wins over everything.
  std::set<std::string_view> given;
  for (const auto& s : settings()) {
    const std::string key(s.key);
    if (vm.count(key) == 0 || vm[key].defaulted()) continue;
    given.insert(s.key);
    const auto values = s.repeatable ? vm[key].as<std::vector<std::string>>()
                                     : std::vector<std::string>{vm[key].as<std::string>()};
    for (const auto& v : values) {
      if (auto st = s.parse(c, v); !st) return bad(key, st.error().message());
    }
    if (auto problem = s.check(c)) return bad(key, *problem);
  }
  if (given.count("model") == 0) {
    if (const char* env = std::getenv("LLMD_MODEL"); env != nullptr && *env != '\0') {
      c.model = env;
      given.insert("model");
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
    auto entries = read_config_file(f, c.config_file);
    if (!entries) return entries.error();
    for (const auto& e : *entries) {
      const Setting& s = *e.setting;
      // Keys the command line (or LLMD_MODEL) gave keep that value; `weight` entries add up.
      if (!s.repeatable && given.count(s.key) != 0) continue;
      const std::string where = c.config_file + ":" + std::to_string(e.line);
      const std::string key(s.key);
      if (auto st = s.parse(c, e.value); !st) return bad(where + ": " + key, st.error().message());
      if (auto problem = s.check(c)) return bad(where + ": " + key, *problem);
      origin[key] = where;
    }
    out.sources.push_back(c.config_file);
  }
  if (out.action == Action::run || out.action == Action::check_config) {
    if (auto problem = check_config(c)) {
      const auto from = origin.find(problem->key);
      return Error(Errc::invalid_argument,
                   (from == origin.end() ? "" : from->second + ": ") + problem->to_string());
    }
  }
  return out;
}

std::string describe(const Config& c) {
  std::ostringstream o;
  for (const auto& s : settings()) {
    for (const auto& v : s.format(c)) o << s.key << " = " << file_value(v) << "\n";
  }
  return o.str();
}

}  // namespace llmd::daemon
