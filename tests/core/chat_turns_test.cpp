// Where a session's turns end in its token sequence (turn_boundary, the rewind's cut for sessions
// whose messages carry no token offsets), and the closing a turn adds after the last answer
// (answer_closing), on the real tokenizer and chat template.
#include "core/chat_turns.h"
#include "core/context_window.h"

#include "tests/engine/engine_test_util.h"

namespace llmd::core {
namespace {

TEST(TurnBoundary, FindsWhereEachKeptTurnEnded) {
  const auto model = test::load_model(test::stories_path());
  const engine::Tokenizer tok(*model);
  const std::vector<engine::ChatMessage> msgs = {{"system", "You tell stories."},
                                                 {"user", "Tell me a story."},
                                                 {"assistant", "Once there was a dog."},
                                                 {"user", "What happened next?"},
                                                 {"assistant", "He ran."},
                                                 {"user", "How did it end?"},
                                                 {"assistant", "Happily."}};
  // The sequence as turns build it: each turn's prompt tokens, then what the model generated (not
  // necessarily the tokenization of its text: here the user's own tokens, to make it plain).
  std::vector<engine::Token> tokens;
  std::vector<std::size_t> ends = {0};  // after the system prompt alone: nothing
  for (std::size_t u = 1; u < msgs.size(); u += 2) {
    auto input = turn_tokens(*model, tok, std::span(msgs).first(u), tokens.size(), msgs[u].content);
    ASSERT_TRUE(input) << input.error().to_string();
    tokens.insert(tokens.end(), input->begin(), input->end());
    const auto generated = test::tokens_of(tok, " " + msgs[u].content + " " + msgs[u + 1].content);
    tokens.insert(tokens.end(), generated.begin(), generated.end());
    ends.push_back(tokens.size());
  }
  for (std::size_t keep = 1, turn = 0; keep < msgs.size(); keep += 2, ++turn) {
    EXPECT_EQ(turn_boundary(*model, tok, msgs, tokens, keep), ends[turn]) << "keep " << keep;
  }
  // Without a system prompt the first turn starts the sequence too.
  const std::vector<engine::ChatMessage> bare(msgs.begin() + 1, msgs.end());
  std::vector<engine::Token> bare_tokens;
  auto first = turn_tokens(*model, tok, {}, 0, bare[0].content);
  ASSERT_TRUE(first);
  bare_tokens = *first;
  bare_tokens.push_back(5);
  auto second = turn_tokens(*model, tok, std::span(bare).first(2), bare_tokens.size(), bare[2].content);
  ASSERT_TRUE(second);
  const std::size_t cut = bare_tokens.size();
  bare_tokens.insert(bare_tokens.end(), second->begin(), second->end());
  EXPECT_EQ(turn_boundary(*model, tok, std::span(bare).first(3), bare_tokens, 0), 0u);
  EXPECT_EQ(turn_boundary(*model, tok, std::span(bare).first(3), bare_tokens, 2), cut);
  // A sequence without that shape (another model's tokens, say): no answer, never a guess.
  std::vector<engine::Token> other(tokens.size(), 7);
  EXPECT_EQ(turn_boundary(*model, tok, msgs, other, 3), std::nullopt);
  // A turn whose answer generated nothing cannot be in a saved sequence.
  auto only_prompts = turn_tokens(*model, tok, std::span(msgs).first(1), 0, msgs[1].content);
  ASSERT_TRUE(only_prompts);
  auto next = turn_tokens(*model, tok, std::span(msgs).first(3), 1, msgs[3].content);
  ASSERT_TRUE(next);
  only_prompts->insert(only_prompts->end(), next->begin(), next->end());
  EXPECT_EQ(turn_boundary(*model, tok, msgs, *only_prompts, 3), std::nullopt);
}

// The closing the template writes after an answer joins the history once: an answer cut by
// max_tokens gets all of it, one whose end-of-generation token is its start gets the rest, a
// sequence that already ends with it (a rewind kept it) gets nothing; with it, the sequence is
// what a client resending the whole conversation sends.
TEST(AnswerClosing, IsWhatTheTemplateWritesAfterTheAnswerOnce) {
  const auto model = test::load_model(test::stories_path());
  const engine::Tokenizer tok(*model);
  const std::vector<engine::ChatMessage> msgs = {{"system", "You tell stories."},
                                                 {"user", "Tell me a story."},
                                                 {"assistant", "Once there was a dog."}};
  auto opened = turn_tokens(*model, tok, std::span(msgs).first(1), 0, msgs[1].content);
  ASSERT_TRUE(opened);
  std::vector<engine::Token> tokens = *opened;
  const auto answer = test::tokens_of(tok, msgs[2].content);
  tokens.insert(tokens.end(), answer.begin(), answer.end());
  auto closing = answer_closing(*model, tok, msgs, tokens);
  ASSERT_TRUE(closing) << closing.error().to_string();
  ASSERT_FALSE(closing->empty());
  // History + closing + the next turn's tokens = the whole conversation as one rendering.
  std::vector<engine::ChatMessage> more = msgs;
  more.push_back({"user", "What happened next?"});
  auto next = turn_tokens(*model, tok, msgs, tokens.size() + closing->size(), more.back().content);
  ASSERT_TRUE(next);
  // (As text: a vocabulary without the template's markers may split them differently at the seam.)
  auto rendered = engine::apply_chat_template(*model, more, /*add_assistant=*/true);
  auto before = engine::apply_chat_template(*model, std::span(msgs).first(2), /*add_assistant=*/true);
  ASSERT_TRUE(rendered && before);
  const auto text_of = [&](const std::vector<engine::Token>& t) {
    std::string out;
    for (engine::Token x : t) out += tok.piece(x, /*render_special=*/true);
    return out;
  };
  // (SentencePiece puts a space before each separately tokenized piece; turn_tokens does the same.)
  const auto unspaced = [](std::string t) { return t.starts_with(' ') ? t.substr(1) : t; };
  EXPECT_EQ(unspaced(text_of(*closing)) + unspaced(text_of(*next)),
            rendered->text.substr(before->text.size() + msgs[2].content.size()));
  // Once there, not again.
  std::vector<engine::Token> closed = tokens;
  closed.insert(closed.end(), closing->begin(), closing->end());
  EXPECT_TRUE(answer_closing(*model, tok, msgs, closed)->empty());
  // Not after a user message, nor for a sequence with nothing in it.
  EXPECT_TRUE(answer_closing(*model, tok, std::span(msgs).first(2), tokens)->empty());
  EXPECT_TRUE(answer_closing(*model, tok, msgs, {})->empty());
}

// A session with tools: every rendering has them, so the head describes them, the turns (a user
// message, then the tools' results) follow prefix-stably, and a re-derivation gives each message
// an end in order.
TEST(SessionTools, TheyAreInTheHeadAndTurnsStayPrefixStable) {
  const auto model = test::load_model(test::stories_path());
  const engine::Tokenizer tok(*model);
  engine::ChatOptions chat;
  chat.tools.push_back({"get_weather", "", R"({"type":"object","properties":{"city":{"type":"string"}}})"});
  const std::vector<engine::ChatMessage> system = {{"system", "You help."}};
  auto plain_head = head_tokens(*model, tok, system);
  auto tools_head = head_tokens(*model, tok, system, chat);
  ASSERT_TRUE(plain_head && tools_head);
  EXPECT_GT(tools_head->size(), plain_head->size() + 10);  // the tools are described there

  std::vector<engine::ChatMessage> msgs = system;
  auto first = turn_tokens(*model, tok, msgs, 0, "Weather in Paris?", chat);
  ASSERT_TRUE(first);
  // The head (with the tools) starts the first turn's tokens: a window move keeps it whole.
  ASSERT_GE(first->size(), tools_head->size());
  EXPECT_TRUE(std::equal(tools_head->begin(), tools_head->end(), first->begin()));
  msgs.push_back({"user", "Weather in Paris?"});
  msgs.push_back({"assistant", R"({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})"});
  const engine::ChatMessage result{"tool", "Sunny"};
  auto second = turn_tokens(*model, tok, msgs, first->size() + 20, std::span(&result, 1), chat);
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_FALSE(second->empty());
  msgs.push_back(result);
  msgs.push_back({"assistant", R"({"response": "It is sunny."})"});
  auto derived = derive_window(*model, tok, msgs, chat);
  ASSERT_TRUE(derived) << derived.error().to_string();
  ASSERT_EQ(derived->ends.size(), msgs.size());
  EXPECT_EQ(derived->ends[0], tools_head->size());
  for (std::size_t i = 1; i < msgs.size(); ++i) EXPECT_GT(derived->ends[i], derived->ends[i - 1]) << i;
  EXPECT_EQ(derived->ends.back(), derived->tokens.size());
  EXPECT_TRUE(std::equal(tools_head->begin(), tools_head->end(), derived->tokens.begin()));
}

}  // namespace
}  // namespace llmd::core
