// Typed request-field access (see json_fields.h).
#include "ipc/json_fields.h"

#include <cmath>

namespace llmd::ipc {
namespace {

Error bad(const char* key, const std::string& what) { return Error(Errc::invalid_argument, std::string(key) + " " + what); }

}  // namespace

Result<nlohmann::json> parse_object(const std::string& body) {
  if (body.empty()) return Error(Errc::invalid_argument, "the request needs a JSON object body");
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again for the reason (only on this error path).
    try {
      const auto reparsed = nlohmann::json::parse(body);
      (void)reparsed;
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999999
      return Error(Errc::invalid_argument, std::string("the request body is not valid JSON: ") + e.what());
    }
    return Error(Errc::invalid_argument, "the request body is not valid JSON");
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
  if (!it->is_number_integer() && !(it->is_number_float() && std::floor(it->get<double>()) == it->get<double>())) {
    return bad(key, "must be an integer");
  }
  const double d = it->get<double>();
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    return bad(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return std::optional<std::int64_t>(static_cast<std::int64_t>(d));
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
    if (**top_p <= 0.0) return Error(Errc::invalid_argument, "top_p must be greater than 0");
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
      if (**v <= 0.0) return Error(Errc::invalid_argument, std::string(key) + " must be greater than 0");
      p.sampling.repeat_penalty = static_cast<float>(**v);
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
        if (!s.is_string()) return Error(Errc::invalid_argument, "stop must be a string or an array of strings");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      return Error(Errc::invalid_argument, "stop must be a string or an array of strings");
    }
  }
  return engine::validate_generate(p);
}

}  // namespace llmd::ipc
