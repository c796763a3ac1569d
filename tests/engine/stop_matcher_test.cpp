#include "engine/stop_matcher.h"

#include <gtest/gtest.h>

namespace llmd::engine {
namespace {

TEST(StopMatcher, WithoutStopStringsEverythingPassesAtOnce) {
  StopMatcher m({});
  auto o = m.push("abc");
  EXPECT_EQ(o.text, "abc");
  EXPECT_FALSE(o.stopped);
}

TEST(StopMatcher, StopStringSplitAcrossPushesIsNeverShown) {
  StopMatcher m({"END"});
  std::string shown;
  shown += m.push("hello E").text;
  EXPECT_EQ(shown, "hello ");  // "E" might start "END": held back
  shown += m.push("N").text;
  EXPECT_EQ(shown, "hello ");
  auto o = m.push("D and more");
  shown += o.text;
  EXPECT_TRUE(o.stopped);
  EXPECT_EQ(shown, "hello ");
  EXPECT_TRUE(m.stopped());
  EXPECT_TRUE(m.push("ignored").stopped);
}

TEST(StopMatcher, FalseStartIsReleased) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.push("EN").text, "");
  EXPECT_EQ(m.push("X").text, "ENX");
}

TEST(StopMatcher, EarliestOfSeveralStopsWins) {
  StopMatcher m({"world", "lo w"});
  auto o = m.push("hello world");
  EXPECT_TRUE(o.stopped);
  EXPECT_EQ(o.text, "hel");
}

TEST(StopMatcher, FinishReleasesHeldText) {
  StopMatcher m({"###"});
  EXPECT_EQ(m.push("a#").text, "a");
  EXPECT_EQ(m.finish(), "#");
}

TEST(StopStrings, ValidationNamesTheProblem) {
  EXPECT_TRUE(validate_stop_strings({"a", "b"}).ok());
  EXPECT_EQ(validate_stop_strings({""}).error().code(), Errc::invalid_argument);
  EXPECT_EQ(validate_stop_strings({std::string(kMaxStopStringBytes + 1, 'x')}).error().code(), Errc::invalid_argument);
  EXPECT_EQ(validate_stop_strings(std::vector<std::string>(kMaxStopStrings + 1, "x")).error().code(),
            Errc::invalid_argument);
  EXPECT_EQ(validate_stop_strings({"\xFF"}).error().code(), Errc::invalid_argument);
}

}  // namespace
}  // namespace llmd::engine
