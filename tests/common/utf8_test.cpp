#include "common/utf8.h"

#include <gtest/gtest.h>

namespace llmd::engine {
namespace {

constexpr const char* kFffd = "\xEF\xBF\xBD";

TEST(Utf8Assembler, AsciiPassesStraightThrough) {
  Utf8Assembler a;
  EXPECT_EQ(a.push("hello"), "hello");
  EXPECT_EQ(a.pending(), 0u);
  EXPECT_EQ(a.finish(), "");
}

TEST(Utf8Assembler, MultiByteCharacterSplitAcrossPushesIsEmittedOnceWhole) {
  const std::string euro = "\xE2\x82\xAC";  // U+20AC, 3 bytes
  Utf8Assembler a;
  EXPECT_EQ(a.push("a\xE2"), "a");
  EXPECT_EQ(a.pending(), 1u);
  EXPECT_EQ(a.push("\x82"), "");
  EXPECT_EQ(a.push("\xAC!"), euro + "!");
  EXPECT_EQ(a.pending(), 0u);
}

TEST(Utf8Assembler, FourByteCharacterOneByteAtATime) {
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600
  Utf8Assembler a;
  std::string out;
  for (char c : emoji) out += a.push(std::string(1, c));
  EXPECT_EQ(out, emoji);
}

TEST(Utf8Assembler, InvalidBytesBecomeReplacementCharacters) {
  Utf8Assembler a;
  EXPECT_EQ(a.push("\xFF" "a"), std::string(kFffd) + "a");
  EXPECT_EQ(a.push("\x80"), kFffd);                          // stray continuation byte
  EXPECT_EQ(a.push("\xC0\xAF"), std::string(kFffd) + kFffd);  // overlong encoding
  EXPECT_EQ(a.push("\xED\xA0\x80"), std::string(kFffd) + kFffd + kFffd);  // surrogate
}

TEST(Utf8Assembler, BrokenSequenceReplacedAndFollowingCharacterKept) {
  Utf8Assembler a;
  // A 3-byte lead followed by ASCII: the lead alone is invalid, the ASCII survives.
  EXPECT_EQ(a.push("\xE2" "x"), std::string(kFffd) + "x");
}

TEST(Utf8Assembler, FinishFlushesIncompleteTailAsOneReplacement) {
  Utf8Assembler a;
  EXPECT_EQ(a.push("ok\xF0\x9F"), "ok");
  EXPECT_EQ(a.finish(), kFffd);
  EXPECT_EQ(a.finish(), "");
}

TEST(Utf8, ValidityCheck) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9 \xE2\x98\x95"));
  EXPECT_FALSE(is_valid_utf8("\xC3"));
  EXPECT_FALSE(is_valid_utf8("\xF5\x80\x80\x80"));
}

}  // namespace
}  // namespace llmd::engine
