// Session ids (core/service.h new_session_id): the kernel's random bytes, well-formed, distinct.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/service.h"

namespace llmd::core {
namespace {

TEST(SessionId, IsSesAnd24LowercaseHexDigits) {
  for (int i = 0; i < 1000; ++i) {
    auto id = new_session_id();
    ASSERT_TRUE(id) << id.error().to_string();
    ASSERT_EQ(id->size(), 28u) << *id;
    EXPECT_EQ(id->rfind("ses_", 0), 0u) << *id;
    EXPECT_EQ(id->find_first_not_of("0123456789abcdef", 4), std::string::npos) << *id;
  }
}

TEST(SessionId, IdsAreDistinctAndUseEveryDigit) {
  std::set<std::string> ids;
  std::set<char> digits;
  for (int i = 0; i < 20000; ++i) {
    auto id = new_session_id();
    ASSERT_TRUE(id);
    ids.insert(*id);
    digits.insert(id->begin() + 4, id->end());
  }
  EXPECT_EQ(ids.size(), 20000u);
  EXPECT_EQ(digits.size(), 16u);
}

}  // namespace
}  // namespace llmd::core
