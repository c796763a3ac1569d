#include "common/result.h"

#include <cerrno>
#include <memory>

#include <gtest/gtest.h>

namespace llmd {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return Error(Errc::invalid_argument, "not positive");
  return v;
}

Status chain(int v) {
  LLMD_TRY_STATUS(parse_positive(v));
  return {};
}

TEST(Result, HoldsValueOrError) {
  auto ok = parse_positive(3);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 3);
  auto bad = parse_positive(-1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_EQ(bad.error().to_string(), "invalid_argument: not positive");
}

TEST(Result, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r(std::make_unique<int>(7));
  ASSERT_TRUE(r);
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(Result, TryPropagatesErrors) {
  EXPECT_TRUE(chain(1).ok());
  EXPECT_EQ(chain(0).error().message(), "not positive");
}

TEST(Result, ErrnoMapping) {
  EXPECT_EQ(errno_error(ENOENT, "x").code(), Errc::not_found);
  EXPECT_EQ(errno_error(EACCES, "x").code(), Errc::permission_denied);
  EXPECT_EQ(errno_error(ENOSPC, "x").code(), Errc::no_space);
  EXPECT_EQ(errno_error(EDQUOT, "x").code(), Errc::no_space);
  EXPECT_EQ(errno_error(ENOMEM, "x").code(), Errc::resource_exhausted);
  EXPECT_EQ(errno_error(EIO, "x").code(), Errc::io_error);
  EXPECT_NE(errno_error(ENOENT, "opening f").message().find("opening f: "), std::string::npos);
  EXPECT_EQ(Error(Errc::corrupt, "bad").with_context("loading").message(), "loading: bad");
}

}  // namespace
}  // namespace llmd
