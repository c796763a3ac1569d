// POST /v1/embeddings (see api.h): OpenAI's request and response shapes over Service::embed.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "ipc/api.h"
#include "ipc/api_errors.h"
#include "ipc/json_fields.h"

namespace llmd::ipc {
namespace {

Error bad_input(const std::string& message) { return Error(Errc::invalid_argument, message).with_param("input"); }

// A token id as OpenAI's token-array inputs carry them: a non-negative integer (the vocabulary is
// checked where the model is known).
Result<engine::Token> token_of(const nlohmann::json& v) {
  if (!v.is_number_integer()) return bad_input("token ids in input must be integers");
  if (v.is_number_unsigned() ? v.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<engine::Token>::max())
                             : v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > std::numeric_limits<engine::Token>::max()) {
    return bad_input("token id " + v.dump() + " in input is not a token of this model");
  }
  return static_cast<engine::Token>(v.get<std::int64_t>());
}

Result<std::vector<engine::Token>> token_array(const nlohmann::json& arr) {
  if (arr.empty()) return bad_input("a token array in input is empty");
  std::vector<engine::Token> out;
  out.reserve(arr.size());
  for (const auto& v : arr) {
    auto t = token_of(v);
    if (!t) return t.error();
    out.push_back(*t);
  }
  return out;
}

// OpenAI's four forms of `input`: a string, an array of strings, an array of token ids (one
// input), an array of arrays of token ids.
Result<core::EmbedRequest> read_input(const nlohmann::json& input) {
  core::EmbedRequest req;
  if (input.is_string()) {
    if (input.get_ref<const std::string&>().empty()) return bad_input("input must not be an empty string");
    req.inputs.emplace_back(input.get<std::string>());
    return req;
  }
  const char* shapes = "input must be a string, an array of strings, an array of token ids or an array of arrays of token ids";
  if (!input.is_array()) return bad_input(shapes);
  if (input.empty()) return bad_input("input must not be an empty array");
  if (input.front().is_number()) {
    auto t = token_array(input);
    if (!t) return t.error();
    req.inputs.emplace_back(std::move(*t));
    return req;
  }
  req.inputs.reserve(input.size());
  const bool strings = input.front().is_string();
  for (std::size_t i = 0; i < input.size(); ++i) {
    const auto& v = input[i];
    if (strings && v.is_string()) {
      if (v.get_ref<const std::string&>().empty()) return bad_input("input[" + std::to_string(i) + "] is an empty string");
      req.inputs.emplace_back(v.get<std::string>());
    } else if (!strings && v.is_array()) {
      auto t = token_array(v);
      if (!t) return t.error();
      req.inputs.emplace_back(std::move(*t));
    } else {
      return bad_input(std::string(shapes) + " (not a mix of them)");
    }
  }
  return req;
}

// A float as JSON: the shortest decimal that reads back as the same float (std::to_chars), held as
// the double nearest to it, which nlohmann writes with the same digits. (The float widened to a
// double would be written with 17 digits.)
double json_float(float f) {
  if (!std::isfinite(f)) return 0.0;  // a normalized vector has none; JSON has no NaN
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf - 1, f);
  *res.ptr = '\0';
  return std::strtod(buf, nullptr);
}

// OpenAI's encoding_format "base64": the vector's little-endian float32 bytes, base64-encoded.
std::string base64_of(const std::vector<float>& v) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<unsigned char> bytes;
  bytes.reserve(v.size() * 4);
  for (float f : v) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<unsigned char>(u >> (8 * i)));
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::uint32_t n = (std::uint32_t{bytes[i]} << 16) | (i + 1 < bytes.size() ? std::uint32_t{bytes[i + 1]} << 8 : 0) |
                            (i + 2 < bytes.size() ? std::uint32_t{bytes[i + 2]} : 0);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}

}  // namespace

void Api::embeddings(HttpRequest& req, std::shared_ptr<Responder> r) {
  auto body = parse_object(req.body);
  if (!body) return reply_error(*r, body.error());
  // Every field is read or refused: one llmd does not implement is never silently ignored.
  for (const auto& [key, value] : body->items()) {
    if (key == "input" || key == "model" || key == "encoding_format" || key == "user") continue;
    if (key == "dimensions") {
      return reply_error(*r, Error(Errc::unsupported, "dimensions is not supported: llmd answers the model's own " +
                                                          std::to_string(model_.info().n_embd) +
                                                          "-dimensional vectors (a shorter vector would need a model "
                                                          "trained for it, Matryoshka-style)")
                                 .with_param("dimensions"));
    }
    return reply_error(*r, Error(Errc::invalid_argument, "unknown field " + key +
                                                            ": /v1/embeddings takes input, model, encoding_format and user")
                               .with_param(key));
  }
  auto user = opt_string(*body, "user");  // advisory (OpenAI's abuse monitoring): accepted, not used
  if (!user) return reply_error(*r, user.error());
  auto model = opt_string(*body, "model");
  if (!model) return reply_error(*r, model.error());
  if (*model && **model != model_id_ && **model != "default") {
    HttpError e = http_error(404, "The model '" + **model + "' does not exist: llmd serves '" + model_id_ + "'",
                             "model_not_found", "model");
    e.body["error"]["type"] = "invalid_request_error";  // as OpenAI answers it
    return reply_error(*r, e);
  }
  auto format = opt_string(*body, "encoding_format");
  if (!format) return reply_error(*r, format.error());
  const bool base64 = *format && **format == "base64";
  if (*format && !base64 && **format != "float") {
    return reply_error(*r, Error(Errc::invalid_argument, "encoding_format must be \"float\" or \"base64\"")
                               .with_param("encoding_format"));
  }
  const auto input = body->find("input");
  if (input == body->end()) return reply_error(*r, bad_input("input is required"));
  auto request = read_input(*input);
  if (!request) return reply_error(*r, request.error());

  const auto rid = service_.embed(caller_of(req.peer), std::move(*request),
                                  [r, base64, model = model_id_](Result<core::EmbedResult> res) {
    if (r->closed()) return;
    if (!res) return reply_error(*r, res.error());
    nlohmann::json data = nlohmann::json::array();
    for (std::size_t i = 0; i < res->vectors.size(); ++i) {
      const auto& v = res->vectors[i];
      nlohmann::json e = {{"object", "embedding"}, {"index", i}};
      if (base64) {
        e["embedding"] = base64_of(v);
      } else {
        nlohmann::json floats = nlohmann::json::array();
        floats.get_ref<nlohmann::json::array_t&>().reserve(v.size());
        for (float f : v) floats.push_back(json_float(f));
        e["embedding"] = std::move(floats);
      }
      data.push_back(std::move(e));
    }
    reply_json(*r, 200, {{"object", "list"},
                         {"data", std::move(data)},
                         {"model", model},
                         {"usage", {{"prompt_tokens", res->prompt_tokens}, {"total_tokens", res->prompt_tokens}}}});
  });
  // A client that hangs up cancels its request (between decodes, or during one).
  r->on_close([this, rid] { service_.cancel(rid); });
}

}  // namespace llmd::ipc
