// Typed access to the fields of a JSON request body, with errors that name the field:
// "temperature must be a number". Unknown fields are ignored by design (OpenAI clients send many).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "engine/generation.h"

namespace llmd::ipc {

// The body as a JSON object. invalid_argument for an empty body, invalid JSON (including invalid
// UTF-8 in strings) or a non-object.
Result<nlohmann::json> parse_object(const std::string& body);

Result<std::optional<std::string>> opt_string(const nlohmann::json& obj, const char* key);
Result<std::optional<std::int64_t>> opt_int(const nlohmann::json& obj, const char* key, std::int64_t min, std::int64_t max);
Result<std::optional<double>> opt_number(const nlohmann::json& obj, const char* key, double min, double max);
Result<std::optional<bool>> opt_bool(const nlohmann::json& obj, const char* key);

// The sampling and length fields shared by every generating endpoint: max_tokens (or
// max_completion_tokens), temperature, top_p, top_k, min_p, seed, stop (string or array of
// strings), repeat_penalty (or repetition_penalty), ignore_eos (generate through end-of-generation
// tokens, for benchmarks). Missing fields keep `params`' values.
Status read_generate_params(const nlohmann::json& obj, std::int32_t max_tokens_limit, engine::GenerateParams& params);

}  // namespace llmd::ipc
