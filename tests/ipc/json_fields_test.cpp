// The request-body reader every HTTP endpoint uses (json_fields.h): whatever a client sends is an
// object or an invalid_argument naming what is wrong, never an exception.
#include "ipc/json_fields.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace llmd::ipc {
namespace {

std::string error_of(const std::string& body) {
  auto r = parse_object(body);
  EXPECT_FALSE(r) << body;
  if (r) return {};
  EXPECT_EQ(r.error().code(), Errc::invalid_argument) << body;
  return r.error().message();
}

TEST(ParseObject, ANumberOutOfRangeNamesItsField) {
  EXPECT_EQ(error_of(R"({"max_tokens": 1e999999})"), "max_tokens is out of range (a number too large for a double)");
  EXPECT_NE(error_of(R"({"prompt": "x", "temperature": -1e400})").find("temperature"), std::string::npos);
  EXPECT_NE(error_of(R"({"a": {"b": [1, {"c": 1e999}]}})").find("a.b[].c"), std::string::npos);
  EXPECT_NE(error_of(R"({"messages": [{"role": "user"}, 1e999]})").find("messages[]"), std::string::npos);
  // A later field after a nested object is named by itself, not by the object's last key.
  EXPECT_EQ(error_of(R"({"a": {"b": 1}, "seed": 1e999})").rfind("seed ", 0), 0u);
}

TEST(ParseObject, NoFieldToNameMeansTheBody) {
  for (const char* body : {"1e999999", "-1e999999", "[1e999]", "[[1e999]]"}) {
    EXPECT_NE(error_of(body).find("out of range"), std::string::npos) << body;
  }
  EXPECT_NE(error_of("{\"prompt\": ").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("JSON object"), std::string::npos);
  EXPECT_NE(error_of("").find("JSON object"), std::string::npos);
  EXPECT_NE(error_of("{\"p\": \"caf\xC3\"}").find("not valid JSON"), std::string::npos);
}

TEST(ParseObject, HugeButFiniteNumbersParse) {
  auto r = parse_object(R"({"n": 1e308, "m": 99999999999999999999999, "k": -1e-999999})");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE((*r)["m"].is_number_float());
}

TEST(OptInt, EveryEdgeIsAnErrorNamingTheFieldOrAValue) {
  const auto check = [](const std::string& value) {
    auto obj = parse_object("{\"max_tokens\": " + value + "}");
    EXPECT_TRUE(obj) << value;
    return opt_int(*obj, "max_tokens", 1, 4096);
  };
  for (const char* bad : {"1e300", "-1e300", "1.5", "0", "-1", "4097", "99999999999999999999999",
                          "18446744073709551615", "9223372036854775807", "-9223372036854775808",
                          "-9223372036854775809", "9223372036854775808.0", "\"8\"", "true", "[1]"}) {
    auto v = check(bad);
    ASSERT_FALSE(v) << bad;
    EXPECT_EQ(v.error().message().rfind("max_tokens ", 0), 0u) << bad << ": " << v.error().message();
  }
  for (const auto& [text, value] : {std::pair<const char*, std::int64_t>{"1", 1}, {"4096", 4096}, {"7.0", 7},
                                    {"4.096e3", 4096}}) {
    auto v = check(text);
    ASSERT_TRUE(v) << text;
    EXPECT_EQ(**v, value) << text;
  }
  // The widest ranges: the bounds themselves, compared exactly.
  const std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  nlohmann::json j = {{"a", hi}, {"b", lo}, {"c", std::numeric_limits<std::uint64_t>::max()}, {"d", 9.3e18}};
  EXPECT_EQ(**opt_int(j, "a", lo, hi), hi);
  EXPECT_EQ(**opt_int(j, "b", lo, hi), lo);
  EXPECT_FALSE(opt_int(j, "c", lo, hi));
  EXPECT_FALSE(opt_int(j, "d", lo, hi));
  EXPECT_FALSE(opt_int(j, "a", lo, hi - 1));
}

TEST(OptNumber, NonFiniteAndOutOfRangeNameTheField) {
  nlohmann::json j = {{"inf", std::numeric_limits<double>::infinity()},
                      {"nan", std::numeric_limits<double>::quiet_NaN()},
                      {"big", 1e300}};
  for (const char* key : {"inf", "nan", "big"}) {
    auto v = opt_number(j, key, 0.0, 100.0);
    ASSERT_FALSE(v) << key;
    EXPECT_EQ(v.error().message().rfind(std::string(key) + " ", 0), 0u) << v.error().message();
  }
}

}  // namespace
}  // namespace llmd::ipc
