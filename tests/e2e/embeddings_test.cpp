// POST /v1/embeddings against the real llmd: OpenAI's response shape, batches, base64, usage, and
// every refused request naming its field.
#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/model.h"
#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

std::vector<float> floats_of(const nlohmann::json& arr) {
  std::vector<float> v;
  for (const auto& x : arr) v.push_back(x.get<float>());
  return v;
}

std::vector<float> from_base64(const std::string& s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::vector<unsigned char> bytes;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const int v = value(c);
    if (v < 0) continue;  // '=' padding
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<unsigned char>(acc >> bits));
    }
  }
  std::vector<float> out(bytes.size() / 4);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::uint32_t u = std::uint32_t{bytes[4 * i]} | std::uint32_t{bytes[4 * i + 1]} << 8 |
                            std::uint32_t{bytes[4 * i + 2]} << 16 | std::uint32_t{bytes[4 * i + 3]} << 24;
    std::memcpy(&out[i], &u, 4);
  }
  return out;
}

double norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

class Embeddings : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    DaemonOptions o;
    o.args = {"--ctx", "256"};  // inputs up to 256 tokens
    daemon_ = new DaemonProcess(scratch_dir(), o);
    ASSERT_TRUE(daemon_->start()) << daemon_->log();
    n_embd_ = engine::Model::load({stories_path()}).value()->info().n_embd;
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  static JsonReply embed(const nlohmann::json& body) { return call(daemon_->client(), "POST", "/v1/embeddings", body); }
  // The vector of one input, alone.
  static std::vector<float> one(const nlohmann::json& input) {
    auto r = embed({{"input", input}});
    EXPECT_EQ(r.status, 200u) << r.raw;
    return r.status == 200 ? floats_of(r.body["data"][0]["embedding"]) : std::vector<float>{};
  }
  // A 400 (or `status`) whose error names `param` (and has `code`, when given).
  static void expect_refused(const nlohmann::json& body, const std::string& param, unsigned status = 400,
                             const std::string& code = {}) {
    auto r = embed(body);
    EXPECT_EQ(r.status, status) << body.dump() << " -> " << r.raw;
    EXPECT_EQ(r.body["error"]["param"], param) << body.dump() << " -> " << r.raw;
    if (!code.empty()) {
      EXPECT_EQ(r.body["error"]["code"], code) << r.raw;
    }
  }

  static inline DaemonProcess* daemon_ = nullptr;
  static inline std::int32_t n_embd_ = 0;
};

TEST_F(Embeddings, AnswersOpenAIsShape) {
  const auto models = call(daemon_->client(), "GET", "/v1/models");
  const std::string model_id = models.body["data"][0]["id"];
  for (const nlohmann::json& model : {nlohmann::json(), nlohmann::json(model_id), nlohmann::json("default")}) {
    nlohmann::json body = {{"input", "Once upon a time there was a cat."}, {"user", "someone"}};
    if (!model.is_null()) body["model"] = model;
    auto r = embed(body);
    ASSERT_EQ(r.status, 200u) << r.raw;
    EXPECT_EQ(r.body["object"], "list");
    EXPECT_EQ(r.body["model"], model_id);
    ASSERT_EQ(r.body["data"].size(), 1u);
    const auto& d = r.body["data"][0];
    EXPECT_EQ(d["object"], "embedding");
    EXPECT_EQ(d["index"], 0);
    const auto v = floats_of(d["embedding"]);
    EXPECT_EQ(v.size(), static_cast<std::size_t>(n_embd_));
    EXPECT_NEAR(norm(v), 1.0, 1e-5);
    const auto prompt = r.body["usage"]["prompt_tokens"].get<int>();
    EXPECT_GT(prompt, 5);
    EXPECT_EQ(r.body["usage"]["total_tokens"], prompt);
    EXPECT_EQ(r.body["usage"].size(), 2u) << r.raw;
    EXPECT_EQ(r.body.size(), 4u) << r.raw;  // object, data, model, usage: nothing else
  }
}

TEST_F(Embeddings, ABatchComesBackInOrderAsEachAlone) {
  const std::vector<std::string> texts = {"The dog ran.", "A girl named Lily found a shiny red ball in the garden.",
                                          "Sun"};
  auto r = embed({{"input", texts}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  ASSERT_EQ(r.body["data"].size(), 3u);
  int tokens = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(r.body["data"][i]["index"], i);
    const auto batched = floats_of(r.body["data"][i]["embedding"]);
    const auto alone = one(texts[i]);
    ASSERT_EQ(batched.size(), alone.size());
    for (std::size_t j = 0; j < alone.size(); ++j) EXPECT_NEAR(batched[j], alone[j], 1e-5) << i << " " << j;
    tokens += embed({{"input", texts[i]}}).body["usage"]["prompt_tokens"].get<int>();
  }
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], tokens);
  // Different texts, different vectors; the same text, the same vector.
  EXPECT_NE(one(texts[0]), one(texts[1]));
  EXPECT_EQ(one(texts[0]), one(texts[0]));
}

TEST_F(Embeddings, Base64IsTheSameFloats) {
  const nlohmann::json input = {"The cat sat.", "Two"};
  auto f = embed({{"input", input}, {"encoding_format", "float"}});
  auto b = embed({{"input", input}, {"encoding_format", "base64"}});
  ASSERT_EQ(f.status, 200u) << f.raw;
  ASSERT_EQ(b.status, 200u) << b.raw;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(b.body["data"][i]["embedding"].is_string()) << b.raw;
    EXPECT_EQ(from_base64(b.body["data"][i]["embedding"]), floats_of(f.body["data"][i]["embedding"]));
    EXPECT_EQ(b.body["data"][i]["index"], i);
  }
  EXPECT_EQ(b.body["usage"], f.body["usage"]);
}

TEST_F(Embeddings, TakesTokenArrays) {
  auto r = embed({{"input", {1, 400, 401, 402}}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_EQ(r.body["data"].size(), 1u);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], 4);
  r = embed({{"input", {{1, 400, 401, 402}, {1, 300}}}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  ASSERT_EQ(r.body["data"].size(), 2u);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(floats_of(r.body["data"][0]["embedding"]), one({1, 400, 401, 402}));
  // The longest input is the embedding context.
  EXPECT_EQ(embed({{"input", std::vector<int>(256, 300)}}).status, 200u);
}

TEST_F(Embeddings, RefusesWhatItCannotDoNamingTheField) {
  expect_refused(nlohmann::json::object(), "input");
  expect_refused({{"input", ""}}, "input");
  expect_refused({{"input", nlohmann::json::array()}}, "input");
  expect_refused({{"input", {"a", ""}}}, "input");
  expect_refused({{"input", {nlohmann::json::array()}}}, "input");
  expect_refused({{"input", {"a", {1, 2}}}}, "input");
  expect_refused({{"input", {1.5}}}, "input");
  expect_refused({{"input", {1, -1}}}, "input");
  expect_refused({{"input", {1, 100000}}}, "input");  // outside the 512-token vocabulary
  expect_refused({{"input", 7}}, "input");
  expect_refused({{"input", {{"text", "a"}}}}, "input");
  expect_refused({{"input", std::vector<int>(257, 300)}}, "input", 400, "context_length_exceeded");
  auto r = embed({{"input", std::vector<int>(257, 300)}});
  EXPECT_EQ(r.body["error"]["limit"], 256) << r.raw;
  EXPECT_EQ(r.body["error"]["actual"], 257) << r.raw;
  expect_refused({{"input", std::vector<std::string>(2049, "a")}}, "input");
  expect_refused({{"input", "a"}, {"dimensions", 8}}, "dimensions", 400, "unsupported");
  expect_refused({{"input", "a"}, {"temperature", 1}}, "temperature");
  expect_refused({{"input", "a"}, {"encoding_format", "int8"}}, "encoding_format");
  expect_refused({{"input", "a"}, {"user", 5}}, "user");
  expect_refused({{"input", "a"}, {"model", "text-embedding-3-small"}}, "model", 404, "model_not_found");
  expect_refused({{"input", "a"}, {"model", 3}}, "model");
  EXPECT_EQ(call(daemon_->client(), "GET", "/v1/embeddings").status, 405u);
  // Still serving.
  EXPECT_EQ(embed({{"input", "fine"}}).status, 200u);
}

TEST(EmbeddingsModel, TinyStoriesVectorsHaveItsWidth) {
  DaemonOptions o;
  o.model = (std::filesystem::path(stories_path()).parent_path() / "TinyStories-656K-Q8_0.gguf").string();
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto width = engine::Model::load({o.model}).value()->info().n_embd;
  auto r = call(d.client(), "POST", "/v1/embeddings", nlohmann::json{{"input", {"Lily had a cat.", "Tom"}}});
  ASSERT_EQ(r.status, 200u) << r.raw;
  ASSERT_EQ(r.body["data"].size(), 2u);
  for (const auto& e : r.body["data"]) {
    const auto v = floats_of(e["embedding"]);
    EXPECT_EQ(v.size(), static_cast<std::size_t>(width));
    EXPECT_NEAR(norm(v), 1.0, 1e-5);
  }
  // The daemon says which pooling it uses and what the context costs.
  EXPECT_NE(d.log().find("embeddings: inputs up to 512 tokens, mean pooling"), std::string::npos) << d.log();
}

}  // namespace
}  // namespace llmd::test
