// Tokenisation and streaming-safe detokenisation with real vocabularies.

#include "engine/generation.h"
#include "engine/chat_template.h"
#include "engine/tokenizer.h"
#include "common/utf8.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

Token tokens_of_word(const Tokenizer& tok) {
  auto t = tok.tokenize(" cat", false, false);
  return t && !t->empty() ? (*t)[0] : 0;
}

class TokenizerTest : public ::testing::Test {
 protected:
  std::unique_ptr<Model> model_ = test::load_model(test::stories_path());
};

TEST_F(TokenizerTest, RoundTripsText) {
  ASSERT_TRUE(model_);
  Tokenizer tok(*model_);
  const std::string text = "Once upon a time, there was a little cat.";
  auto t = tok.tokenize(text, true, false);
  ASSERT_TRUE(t);
  ASSERT_FALSE(t->empty());
  EXPECT_EQ((*t)[0], tok.bos());
  EXPECT_EQ(tok.detokenize(*t), text);
}

TEST_F(TokenizerTest, TooLargeTextIsRefused) {
  ASSERT_TRUE(model_);
  Tokenizer tok(*model_);
  const std::string big(kMaxTokenizeBytes + 1, 'a');
  EXPECT_EQ(tok.tokenize(big, false, false).error().code(), Errc::invalid_argument);
}

// TinyStories-656K's SentencePiece vocabulary has no byte tokens: llama.cpp throws for a character
// it lacks, which once ended the daemon (any user's "{" in a chat).
TEST(TokenizerNoByteTokens, UnencodableTextIsInvalidArgument) {
  auto model = test::load_model(test::tinystories_path());
  ASSERT_TRUE(model);
  Tokenizer tok(*model);
  for (const std::string text : {"Hi {", "[1]", "caf\xC3\xA9", "~"}) {
    auto t = tok.tokenize(text, true, true);
    ASSERT_FALSE(t) << text;
    EXPECT_EQ(t.error().code(), Errc::invalid_argument) << text;
    EXPECT_NE(t.error().message().find("cannot encode"), std::string::npos) << t.error().message();
  }
  EXPECT_TRUE(tok.tokenize("Once upon a time", true, false)) << "ordinary text still tokenizes";
}

TEST_F(TokenizerTest, InvalidTokensRenderEmpty) {
  ASSERT_TRUE(model_);
  Tokenizer tok(*model_);
  EXPECT_EQ(tok.piece(-5), "");
  EXPECT_EQ(tok.piece(tok.n_vocab()), "");
  EXPECT_FALSE(tok.is_eog(-1));
}

// stories260K has 512 tokens with byte fallback: any non-ASCII character is spelled as byte
// tokens, each one an incomplete UTF-8 fragment on its own.
TEST_F(TokenizerTest, MultiByteCharactersSplitAcrossTokensStreamOnceAndWhole) {
  ASSERT_TRUE(model_);
  Tokenizer tok(*model_);
  // Generated text continues a sequence, so stream the tokens after a first word (an SPM
  // vocabulary treats the very first token's leading space specially).
  const std::string text = "Look: caf\xC3\xA9 na\xC3\xAFve \xE2\x98\x95 \xF0\x9F\x98\x80 done";
  auto all = tok.tokenize(text, false, false);
  ASSERT_TRUE(all);
  ASSERT_GT(all->size(), 2u);
  const std::string first_word = tok.detokenize(std::span(all->data(), 1));
  const std::vector<Token> rest(all->begin() + 1, all->end());
  const std::vector<Token>* t = &rest;

  bool saw_fragment = false;
  TextStream stream(tok, {}, 1 << 20);
  std::string streamed;
  for (Token id : *t) {
    if (!is_valid_utf8(tok.piece(id))) saw_fragment = true;
    auto d = stream.push(id);
    EXPECT_TRUE(is_valid_utf8(d.text)) << "a delta split a character";
    streamed += d.text;
  }
  streamed += stream.end(FinishReason::length).text;
  EXPECT_TRUE(saw_fragment) << "the test text no longer exercises split characters";
  EXPECT_EQ(first_word + streamed, text);
  EXPECT_NE(streamed.find("caf\xC3\xA9"), std::string::npos);
  EXPECT_NE(streamed.find("\xF0\x9F\x98\x80"), std::string::npos);
}

TEST_F(TokenizerTest, EndOfGenerationTokenEndsTheStreamWithoutText) {
  ASSERT_TRUE(model_);
  Tokenizer tok(*model_);
  ASSERT_TRUE(tok.is_eog(tok.eos()));
  TextStream stream(tok, {}, 100);
  auto first = stream.push(tokens_of_word(tok));
  EXPECT_EQ(first.finish, FinishReason::none);
  auto d = stream.push(tok.eos());
  EXPECT_EQ(d.finish, FinishReason::eog);
  EXPECT_EQ(d.text, "");
  EXPECT_TRUE(stream.done());
  EXPECT_EQ(stream.push(tokens_of_word(tok)).text, "");  // nothing after the end

  TextStream ignoring(tok, {}, 3, /*ignore_eog=*/true);
  EXPECT_EQ(ignoring.push(tok.eos()).finish, FinishReason::none);
  EXPECT_EQ(ignoring.push(tok.eos()).finish, FinishReason::none);
  EXPECT_EQ(ignoring.push(tok.eos()).finish, FinishReason::length);
}

// A format's preserved tokens (a template's special tool-call markers) show their text in the
// answer, so its parser finds them; other special tokens show none.
TEST_F(TokenizerTest, OnlyTheSpecialTokensAFormatPreservesShowTheirText) {
  ASSERT_TRUE(model_);
  Tokenizer tok(*model_);
  const Token bos = tok.bos();
  ASSERT_FALSE(tok.is_eog(bos));
  const std::string text = tok.piece(bos, /*render_special=*/true);
  ASSERT_FALSE(text.empty());
  TextStream hidden(tok, {}, 10);
  EXPECT_EQ(hidden.push(bos).text, "");
  TextStream shown(tok, {}, 10, false, preserved_token_ids(tok, {text, "not one token at all"}));
  EXPECT_EQ(shown.push(bos).text, text);
}

}  // namespace
}  // namespace llmd::engine
