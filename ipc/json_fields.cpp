// Typed request-field access (see json_fields.h).
#include "ipc/json_fields.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace llmd::ipc {
namespace {

Error bad(const char* key, const std::string& what) {
  return Error(Errc::invalid_argument, std::string(key) + " " + what).with_param(key);
}

}  // namespace

Result<nlohmann::json> parse_object(const std::string& body) {
  if (body.empty()) return Error(Errc::invalid_argument, "the request needs a JSON object body");
  // Where the parser is, as a path of object keys ("messages[].content"), so that a number out of
  // range names its field. path[d] names what is being read at depth d + 1.
  std::vector<std::string> path;
  const auto track = [&path](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    const auto d = static_cast<std::size_t>(depth);
    switch (event) {
      case E::object_start:
      case E::array_start:
        path.resize(d);
        path.emplace_back(event == E::array_start ? "[]" : "");
        break;
      case E::key:
        path.resize(d);
        if (d > 0) path[d - 1] = parsed.is_string() ? parsed.get<std::string>() : std::string();
        break;
      case E::object_end:
      case E::array_end: path.resize(d); break;
      case E::value: break;
    }
    return true;
  };
  const auto where = [&path] {
    std::string out;
    for (const auto& p : path) {
      if (p.empty()) continue;
      if (p != "[]" && !out.empty()) out += '.';
      out += p;
    }
    return out;
  };
  nlohmann::json j;
  // nlohmann reports malformed text as parse_error but a number that does not fit a double
  // ("1e999999") as out_of_range: both are the client's mistake, never the server's.
  try {
    j = nlohmann::json::parse(body, track);
  } catch (const nlohmann::json::out_of_range&) {
    const std::string field = where();
    if (field.empty() || field.rfind("[]", 0) == 0) {
      return Error(Errc::invalid_argument, "the request body is not valid JSON: a number is out of range");
    }
    return Error(Errc::invalid_argument, field + " is out of range (a number too large for a double)").with_param(field);
  } catch (const nlohmann::json::exception& e) {
    return Error(Errc::invalid_argument, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return Error(Errc::invalid_argument, "the request body must be a JSON object");
  return j;
}

Result<std::optional<std::string>> opt_string(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return bad(key, "must be a string");
  return std::optional<std::string>(it->get<std::string>());
}

Result<std::optional<std::int64_t>> opt_int(const nlohmann::json& obj, const char* key, std::int64_t min, std::int64_t max) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::int64_t>();
  const auto out_of_range = [&] {
    return bad(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  };
  // Integers are compared as integers (a double cannot hold every int64); a float is taken when
  // it is integral and in range (clients write 4.0), and never converted outside int64's range.
  if (it->is_number_unsigned()) {
    const auto u = it->get<std::uint64_t>();
    if (max < 0 || u > static_cast<std::uint64_t>(max) || static_cast<std::int64_t>(u) < min) return out_of_range();
    return std::optional<std::int64_t>(static_cast<std::int64_t>(u));
  }
  if (it->is_number_integer()) {
    const auto v = it->get<std::int64_t>();
    if (v < min || v > max) return out_of_range();
    return std::optional<std::int64_t>(v);
  }
  if (!it->is_number_float()) return bad(key, "must be an integer");
  const double d = it->get<double>();
  if (!std::isfinite(d) || std::floor(d) != d) return bad(key, "must be an integer");
  constexpr double kTwo63 = 9223372036854775808.0;
  if (d < -kTwo63 || d >= kTwo63) return out_of_range();
  const auto v = static_cast<std::int64_t>(d);
  if (v < min || v > max) return out_of_range();
  return std::optional<std::int64_t>(v);
}

Result<std::optional<double>> opt_number(const nlohmann::json& obj, const char* key, double min, double max) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) return bad(key, "must be a number");
  const double d = it->get<double>();
  if (!std::isfinite(d) || d < min || d > max) {
    return bad(key, "must be between " + nlohmann::json(min).dump() + " and " + nlohmann::json(max).dump());
  }
  return std::optional<double>(d);
}

Result<std::optional<bool>> opt_bool(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<bool>();
  if (!it->is_boolean()) return bad(key, "must be true or false");
  return std::optional<bool>(it->get<bool>());
}

Status read_generate_params(const nlohmann::json& obj, std::int32_t max_tokens_limit, engine::GenerateParams& p) {
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    auto v = opt_int(obj, key, 1, max_tokens_limit);
    if (!v) return v.error();
    if (*v) p.max_tokens = static_cast<std::int32_t>(**v);
  }
  auto temperature = opt_number(obj, "temperature", 0.0, 100.0);
  if (!temperature) return temperature.error();
  if (*temperature) p.sampling.temperature = static_cast<float>(**temperature);
  auto top_p = opt_number(obj, "top_p", 0.0, 1.0);
  if (!top_p) return top_p.error();
  if (*top_p) {
    if (**top_p <= 0.0) return bad("top_p", "must be greater than 0");
    p.sampling.top_p = static_cast<float>(**top_p);
  }
  auto top_k = opt_int(obj, "top_k", 0, 1 << 20);
  if (!top_k) return top_k.error();
  if (*top_k) p.sampling.top_k = static_cast<std::int32_t>(**top_k);
  auto min_p = opt_number(obj, "min_p", 0.0, 1.0);
  if (!min_p) return min_p.error();
  if (*min_p) p.sampling.min_p = static_cast<float>(**min_p);
  auto seed = opt_int(obj, "seed", 0, 0xFFFFFFFFll);
  if (!seed) return seed.error();
  if (*seed) p.sampling.seed = static_cast<std::uint32_t>(**seed);
  for (const char* key : {"repeat_penalty", "repetition_penalty"}) {
    auto v = opt_number(obj, key, 0.0, 10.0);
    if (!v) return v.error();
    if (*v) {
      if (**v <= 0.0) return bad(key, "must be greater than 0");
      p.sampling.repeat_penalty = static_cast<float>(**v);
    }
  }
  for (const char* key : {"presence_penalty", "frequency_penalty"}) {
    auto v = opt_number(obj, key, -2.0, 2.0);
    if (!v) return v.error();
    if (*v) (key[0] == 'p' ? p.sampling.presence_penalty : p.sampling.frequency_penalty) = static_cast<float>(**v);
  }
  if (auto it = obj.find("logit_bias"); it != obj.end() && !it->is_null()) {
    if (!it->is_object()) return bad("logit_bias", "must be an object mapping token ids to biases");
    p.sampling.logit_bias.clear();
    for (const auto& [key, value] : it->items()) {
      std::size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (...) {
        used = 0;
      }
      if (used != key.size() || key.empty() || id < 0 || id > 0x7FFFFFFF) {
        return bad("logit_bias", "keys must be token ids (got \"" + key + "\")");
      }
      if (!value.is_number() || !std::isfinite(value.get<double>()) || std::fabs(value.get<double>()) > 100.0) {
        return bad("logit_bias", "values must be numbers between -100 and 100");
      }
      p.sampling.logit_bias.emplace_back(static_cast<engine::Token>(id), value.get<float>());
    }
  }
  auto ignore_eos = opt_bool(obj, "ignore_eos");
  if (!ignore_eos) return ignore_eos.error();
  if (*ignore_eos) p.ignore_eog = **ignore_eos;
  if (auto it = obj.find("stop"); it != obj.end() && !it->is_null()) {
    p.stop.clear();
    if (it->is_string()) {
      p.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) return bad("stop", "must be a string or an array of strings");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      return bad("stop", "must be a string or an array of strings");
    }
  }
  return engine::validate_generate(p);
}

}  // namespace llmd::ipc
