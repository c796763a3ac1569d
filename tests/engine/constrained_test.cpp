// Answers that must follow a format: tools and JSON schemas through llama.cpp's chat layer (and
// llmd's generic tool-call format for templates without one), grammar-constrained sampling,
// logit bias, penalties and log-probabilities — on the real story models.
#include <cmath>
#include <memory>

#include <nlohmann/json.hpp>

#include "engine/chat_template.h"
#include "engine/grammar_filter.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

using nlohmann::json;

const std::vector<ChatMessage> kAsk = {{"system", "You have tools."}, {"user", "What is the weather in Paris?"}};

ChatTool weather() {
  return {"get_weather", "The weather in a city.",
          R"({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]})"};
}
ChatTool clock() { return {"get_time", "", R"({"type":"object","properties":{"zone":{"enum":["UTC","CET"]}},"required":["zone"]})"}; }

// Generates greedily (or with a seed) from a prompt under its grammar; returns the answer text.
std::string generate(const Model& model, const ChatPrompt& p, int32_t max_tokens, float temperature = 0.0f,
                     uint32_t seed = 1) {
  Tokenizer tok(model);
  auto ctx = test::make_context(model, 1, 1024);
  if (!ctx) return {};
  auto prompt = tok.tokenize(p.text, true, true);
  EXPECT_TRUE(prompt) << prompt.error().to_string();
  if (!prompt) return {};
  SequenceJob job;
  job.seq = 0;
  job.prompt = std::move(*prompt);
  job.params = test::greedy(max_tokens);
  job.params.sampling.temperature = temperature;
  job.params.sampling.seed = seed;
  job.params.sampling.grammar = p.grammar;
  // As the Service does: the grammar's prefill is the prompt's own last tokens.
  const auto bound = bind_prefill(model, tok, job.prompt, job.params.sampling.grammar);
  EXPECT_TRUE(bound) << bound.error().to_string();
  job.params.stop = p.stops;
  return test::run_one(*ctx, tok, std::move(job)).text;
}

TEST(ChatConstraints, ATemplateWithoutToolCallsGetsTheGenericFormat) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->info().chat_template_tool_calls);
  ChatOptions o;
  o.tools = {weather(), clock()};
  o.tool_choice = ToolChoice::required;
  auto p = apply_chat_template(*m, kAsk, true, o);
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_EQ(p->syntax.kind, AnswerSyntax::Kind::generic);
  EXPECT_FALSE(p->grammar.grammar.empty());
  EXPECT_FALSE(p->grammar.lazy);
  // The tools are described in the system message, which stays the first.
  EXPECT_EQ(p->text.rfind("<|im_start|>system\nYou have tools.\n\nYou can call these tools", 0), 0u) << p->text;
  EXPECT_NE(p->text.find("get_weather"), std::string::npos);
}

TEST(ChatConstraints, ARequiredCallIsAlwaysWellFormedEvenFromATinyModel) {
  for (const auto& path : {test::stories_path()}) {
    auto m = test::load_model(path);
    ASSERT_TRUE(m);
    ChatOptions o;
    o.tools = {weather(), clock()};
    o.tool_choice = ToolChoice::required;
    auto p = apply_chat_template(*m, kAsk, true, o);
    ASSERT_TRUE(p) << p.error().to_string();
    for (uint32_t seed : {1u, 2u, 3u}) {
      const std::string text = generate(*m, *p, 400, 0.8f, seed);
      const ParsedAnswer a = parse_answer(p->syntax, text, false);
      ASSERT_EQ(a.tool_calls.size(), 1u) << path << " seed " << seed << ": " << text;  // one call unless parallel
      const ToolCall& c = a.tool_calls[0];
      EXPECT_EQ(c.id.rfind("call_", 0), 0u);
      const json args = json::parse(c.arguments);
      if (c.name == "get_weather") {
        EXPECT_TRUE(args.at("city").is_string()) << c.arguments;
        if (args.contains("days")) EXPECT_TRUE(args["days"].is_number_integer());
      } else {
        ASSERT_EQ(c.name, "get_time");
        EXPECT_TRUE(args.at("zone") == "UTC" || args.at("zone") == "CET") << c.arguments;
      }
    }
  }
}

TEST(ChatConstraints, ANamedFunctionIsTheOneCalled) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  ChatOptions o;
  o.tools = {weather(), clock()};
  o.tool_choice = ToolChoice::function;
  o.tool_name = "get_time";
  auto p = apply_chat_template(*m, kAsk, true, o);
  ASSERT_TRUE(p) << p.error().to_string();
  const ParsedAnswer a = parse_answer(p->syntax, generate(*m, *p, 300), false);
  ASSERT_EQ(a.tool_calls.size(), 1u);
  EXPECT_EQ(a.tool_calls[0].name, "get_time");
}

// TinyStories-656K's vocabulary has no "{" (nor "[", "(", "#"): it cannot write JSON at all. Its
// prompts with tools cannot even be tokenized, and a schema is refused up front — never a
// failure on the engine thread, never an answer that only looks like JSON.
TEST(ChatConstraints, AVocabularyWithoutBracesGetsAClearRefusal) {
  auto m = test::load_model(test::tinystories_path());
  ASSERT_TRUE(m);
  Tokenizer tok(*m);
  ChatOptions o;
  o.json_schema = R"({"type":"object","properties":{"name":{"type":"string"}},"required":["name"]})";
  auto p = apply_chat_template(*m, kAsk, true, o);
  ASSERT_TRUE(p) << p.error().to_string();
  auto prompt = tok.tokenize(p->text, true, true);
  ASSERT_TRUE(prompt) << prompt.error().to_string();
  // The grammar may start ("```json" opens a fence) and then find no "{": refused up front, or the
  // answer ends as an error at the dead end — never a finished answer that is not JSON.
  const auto bound = bind_prefill(*m, tok, *prompt, p->grammar);
  if (!bound) {
    EXPECT_EQ(bound.error().param(), "response_format");
  } else {
    auto ctx = test::make_context(*m, 1, 1024);
    ASSERT_TRUE(ctx);
    SequenceJob job;
    job.seq = 0;
    job.prompt = *prompt;
    job.params = test::greedy(200);
    job.params.sampling.grammar = p->grammar;
    const auto o = test::run_one(*ctx, tok, std::move(job));
    EXPECT_EQ(o.finish, FinishReason::error) << o.text;
    EXPECT_TRUE(o.grammar_dead_end) << o.text;
  }
  ChatOptions tools;
  tools.tools = {weather()};
  tools.tool_choice = ToolChoice::required;
  auto t = apply_chat_template(*m, kAsk, true, tools);
  ASSERT_FALSE(t);  // the generic format's answer starts with "{"
  EXPECT_EQ(t.error().param(), "tools");
}

TEST(ChatConstraints, AJsonSchemaAnswerParsesAndHasItsRequiredKeys) {
  for (const auto& path : {test::stories_path()}) {
    auto m = test::load_model(path);
    ASSERT_TRUE(m);
    ChatOptions o;
    o.json_schema = R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},)"
                    R"("ok":{"type":"boolean"}},"required":["name","age","ok"]})";
    auto p = apply_chat_template(*m, kAsk, true, o);
    ASSERT_TRUE(p) << p.error().to_string();
    EXPECT_EQ(p->syntax.kind, AnswerSyntax::Kind::common);
    ASSERT_FALSE(p->grammar.grammar.empty());
    const std::string text = generate(*m, *p, 400);
    const ParsedAnswer a = parse_answer(p->syntax, text, false);
    const json j = json::parse(a.content, nullptr, false);
    ASSERT_TRUE(j.is_object()) << path << ": " << text;
    EXPECT_TRUE(j.at("name").is_string());
    EXPECT_TRUE(j.at("age").is_number_integer());
    EXPECT_TRUE(j.at("ok").is_boolean());
  }
}

TEST(ChatConstraints, AGrammarConstrainsTheAnswer) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  ChatOptions o;
  o.grammar = R"(root ::= ("yes" | "no") "." )";
  auto p = apply_chat_template(*m, kAsk, true, o);
  ASSERT_TRUE(p) << p.error().to_string();
  for (uint32_t seed : {1u, 2u, 3u, 4u}) {
    const std::string text = generate(*m, *p, 20, 1.0f, seed);
    EXPECT_TRUE(text == "yes." || text == "no.") << text;
  }
}

TEST(ChatConstraints, HistoryWithToolCallsRendersAsTheCallsTheModelWrote) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  std::vector<ChatMessage> msgs = kAsk;
  ChatMessage call{"assistant", ""};
  call.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"}};
  msgs.push_back(call);
  ChatMessage result{"tool", "sunny"};
  result.tool_call_id = "call_1";
  msgs.push_back(result);
  auto p = apply_chat_template(*m, msgs, true);
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_NE(p->text.find(R"(<|im_start|>assistant
{"tool_calls":[{"arguments":{"city":"Paris"},"name":"get_weather"}]}<|im_end|>)"),
            std::string::npos)
      << p->text;
  EXPECT_NE(p->text.find("<|im_start|>tool\nsunny<|im_end|>"), std::string::npos) << p->text;
}

TEST(ChatConstraints, GenericAnswersParseBack) {
  AnswerSyntax s;
  s.kind = AnswerSyntax::Kind::generic;
  s.tools = true;
  auto calls = parse_answer(s, R"({"tool_calls":[{"name":"f","arguments":{"a":1}},{"name":"g","arguments":{}}]})", false);
  ASSERT_EQ(calls.tool_calls.size(), 2u);
  EXPECT_EQ(calls.tool_calls[0].arguments, R"({"a":1})");
  EXPECT_NE(calls.tool_calls[0].id, calls.tool_calls[1].id);
  EXPECT_EQ(parse_answer(s, R"({"response": "hello"})", false).content, "hello");
  // Cut short: no calls; shown as it is when complete, nothing while it streams.
  const std::string cut = R"({"tool_calls":[{"name":"f","argu)";
  EXPECT_TRUE(parse_answer(s, cut, false).tool_calls.empty());
  EXPECT_EQ(parse_answer(s, cut, false).content, cut);
  EXPECT_EQ(parse_answer(s, cut, true).content, "");
}

TEST(ChatConstraints, BadOptionsAreRefusedNamingTheirField) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  const auto param_of = [&](const ChatOptions& o) {
    auto p = apply_chat_template(*m, kAsk, true, o);
    return p ? std::string("ok") : p.error().param();
  };
  ChatOptions bad_name;
  bad_name.tools = {{"not a name", "", ""}};
  EXPECT_EQ(param_of(bad_name), "tools");
  ChatOptions bad_schema;
  bad_schema.tools = {{"f", "", "[1]"}};
  EXPECT_EQ(param_of(bad_schema), "tools");
  ChatOptions missing;
  missing.tools = {weather()};
  missing.tool_choice = ToolChoice::function;
  missing.tool_name = "nope";
  EXPECT_EQ(param_of(missing), "tool_choice");
  ChatOptions required_none;
  required_none.tool_choice = ToolChoice::required;
  EXPECT_EQ(param_of(required_none), "tool_choice");
  ChatOptions bad_grammar;
  bad_grammar.grammar = "root ::= (";
  EXPECT_EQ(param_of(bad_grammar), "grammar");
  ChatOptions grammar_and_tools;
  grammar_and_tools.tools = {weather()};
  grammar_and_tools.grammar = R"(root ::= "x")";
  EXPECT_EQ(param_of(grammar_and_tools), "grammar");
  ChatOptions not_object;
  not_object.json_schema = "\"x\"";
  EXPECT_EQ(param_of(not_object), "response_format");
}

// stories260K, one slot, and a greedy job on "Once upon a time".
class Sampling : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = test::load_model(test::stories_path());
    ASSERT_TRUE(m_);
    tok_ = std::make_unique<Tokenizer>(*m_);
    ctx_ = test::make_context(*m_, 1, 512);
    ASSERT_TRUE(ctx_);
  }
  SequenceJob job(int32_t max_tokens) const {
    SequenceJob j;
    j.seq = 0;
    j.prompt = test::tokens_of(*tok_, "Once upon a time");
    j.params = test::greedy(max_tokens);
    return j;
  }
  SequenceOutcome run(const SequenceJob& j) {
    ctx_->seq_clear(0);
    return test::run_one(*ctx_, *tok_, j);
  }
  std::unique_ptr<Model> m_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Context> ctx_;
};

TEST_F(Sampling, LogprobsAreTheModelsOwnAndGreedyPicksTheTop) {
  SequenceJob j = job(12);
  j.params.top_logprobs = 5;
  const auto o = run(j);
  ASSERT_EQ(o.logprobs.size(), o.tokens.size());
  for (std::size_t i = 0; i < o.logprobs.size(); ++i) {
    const TokenLogprob& lp = o.logprobs[i];
    EXPECT_EQ(lp.token, o.tokens[i]);
    ASSERT_EQ(lp.top.size(), 5u);
    double mass = 0;
    for (std::size_t k = 0; k < lp.top.size(); ++k) {
      EXPECT_LE(lp.top[k].second, 0.0f);
      if (k > 0) EXPECT_LE(lp.top[k].second, lp.top[k - 1].second);
      mass += std::exp(lp.top[k].second);
    }
    EXPECT_LE(mass, 1.0 + 1e-4);
    EXPECT_EQ(lp.top[0].first, lp.token);  // greedy
    EXPECT_NEAR(lp.top[0].second, lp.logprob, 1e-5);
  }
}

TEST_F(Sampling, LogitBiasAndPenaltiesChangeWhatIsPicked) {
  const SequenceJob plain_job = job(48);
  const auto plain = run(plain_job);
  ASSERT_FALSE(plain.tokens.empty());
  SequenceJob biased = plain_job;
  biased.params.sampling.logit_bias = {{plain.tokens[0], -100.0f}};
  EXPECT_NE(run(biased).tokens[0], plain.tokens[0]);
  SequenceJob penalised = plain_job;
  penalised.params.sampling.presence_penalty = 2.0f;
  penalised.params.sampling.frequency_penalty = 2.0f;
  EXPECT_NE(run(penalised).tokens, plain.tokens);
  // Out of the vocabulary, or out of range: refused.
  GenerateParams p = test::greedy(4);
  p.sampling.logit_bias = {{m_->info().n_vocab, 1.0f}};
  EXPECT_EQ(Sampler::create(*m_, p.sampling).error().param(), "logit_bias");
  p.sampling.logit_bias = {{1, 101.0f}};
  EXPECT_EQ(validate_generate(p).error().code(), Errc::invalid_argument);
}

// Constrained sampling takes shortcuts (Sampler::greedy_constrained: tokens in logit order;
// Sampler::filter: the vocabulary by first-byte groups). A grammar with a token element is filtered
// whole, token by token, as llama.cpp does: the reference. Both must give the same answer, token for
// token, greedy and sampled, on stories260K and on the random-weight smollm2 shape (49k tokens,
// whose picks the grammar rejects at almost every structural position).
class FilterExactness : public ::testing::TestWithParam<std::string> {};

TEST_P(FilterExactness, ShortcutsGiveTheFullFiltersAnswer) {
  const auto m = test::load_model(GetParam() == "stories260K" ? test::stories_path() : test::generated_model(GetParam()));
  ASSERT_TRUE(m);
  const Tokenizer tok(*m);
  auto ctx = test::make_context(*m, 1, 512);
  ASSERT_TRUE(ctx);
  ChatOptions o;
  o.json_schema = R"({"type":"object","properties":{"title":{"type":"string"},"mood":{"enum":["happy","sad"]},"count":{"type":"integer"}},"required":["title","mood","count"]})";
  auto p = apply_chat_template(*m, kAsk, true, o);
  ASSERT_TRUE(p) << p.error().to_string();
  const auto prompt = tok.tokenize(p->text, /*add_special=*/true, /*parse_special=*/true);
  ASSERT_TRUE(prompt);
  const auto run = [&](GrammarParams g, float temperature) {
    SequenceJob j;
    j.seq = 0;
    j.prompt = *prompt;
    j.params = test::greedy(48);
    j.params.sampling.temperature = temperature;
    j.params.sampling.seed = 7;
    j.params.sampling.grammar = std::move(g);
    EXPECT_TRUE(bind_prefill(*m, tok, j.prompt, j.params.sampling.grammar));
    ctx->seq_clear(0);
    return test::run_one(*ctx, tok, j).tokens;
  };
  GrammarParams reference = p->grammar;
  reference.grammar += "\nunused-token-rule ::= <[0]>\n";
  ASSERT_TRUE(grammar_has_tokens(reference.grammar));
  ASSERT_FALSE(grammar_has_tokens(p->grammar.grammar));
  for (float temperature : {0.0f, 0.8f}) {
    const auto fast = run(p->grammar, temperature);
    ASSERT_GT(fast.size(), 8u);
    EXPECT_EQ(fast, run(reference, temperature)) << "temperature " << temperature;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, FilterExactness, ::testing::Values("stories260K", "smollm2-135m-q8_0"));

TEST(GrammarFilter, TokenElementsAreFoundOutsideStringsClassesAndComments) {
  EXPECT_FALSE(grammar_has_tokens(R"(root ::= "<tag>" [<>] # <not a token>)"));
  EXPECT_FALSE(grammar_has_tokens("root ::= \"a\\\"<\" x\nx ::= [\\]<]"));
  EXPECT_TRUE(grammar_has_tokens("root ::= <[12]> \"x\""));
  EXPECT_TRUE(grammar_has_tokens("root ::= !<think> x"));
}

}  // namespace
}  // namespace llmd::engine
