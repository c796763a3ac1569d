// Where a session's turns end in its token sequence (turn_boundary, the rewind's cut for sessions
// whose messages carry no token offsets), on the real tokenizer and chat template.
#include "core/chat_turns.h"

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

}  // namespace
}  // namespace llmd::core
