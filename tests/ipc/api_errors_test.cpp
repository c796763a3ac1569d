// The HTTP error mapping reads an Error's code, reason and details, never its message text.
#include "ipc/api_errors.h"

#include <gtest/gtest.h>

#include "core/chat_turns.h"
#include "core/service.h"

namespace llmd::ipc {
namespace {

const nlohmann::json& err(const HttpError& e) { return e.body.at("error"); }

TEST(ApiErrors, ContextLengthExceededComesFromTheReason) {
  const Status st = core::check_context(900, 200, 1024, core::SeqUse::turn, "messages");
  ASSERT_FALSE(st.ok());
  const HttpError e = to_http_error(st.error());
  EXPECT_EQ(e.status, 400u);
  EXPECT_EQ(err(e)["code"], "context_length_exceeded");
  EXPECT_EQ(err(e)["type"], "invalid_request_error");
  EXPECT_EQ(err(e)["param"], "messages");
  EXPECT_EQ(err(e)["limit"], 1024);
  EXPECT_EQ(err(e)["actual"], 1100);
  EXPECT_EQ(err(e)["message"], st.error().message());

  // A message that merely starts with the words is an ordinary invalid request; the reason
  // without the words is still the context.
  const HttpError text_only = to_http_error(Error(Errc::invalid_argument, "context_length_exceeded: made up"));
  EXPECT_EQ(err(text_only)["code"], "invalid_request");
  EXPECT_TRUE(err(text_only)["param"].is_null());
  const HttpError reason_only =
      to_http_error(Error(Errc::invalid_argument, "too long").with_reason(Reason::context_length_exceeded));
  EXPECT_EQ(err(reason_only)["code"], "context_length_exceeded");
}

TEST(ApiErrors, LimitsNameTheirKeyFromTheError) {
  const HttpError e = to_http_error(core::over_limit("too many requests in flight", "max-in-flight", 4, 4));
  EXPECT_EQ(e.status, 429u);
  EXPECT_EQ(err(e)["code"], "limit_exceeded");
  EXPECT_EQ(err(e)["type"], "rate_limit_error");
  EXPECT_EQ(err(e)["param"], "max-in-flight");
  EXPECT_EQ(err(e)["limit"], 4);
  EXPECT_EQ(err(e)["actual"], 4);
  EXPECT_EQ(err(e)["message"], "too many requests in flight (limit max-in-flight = 4)");
  ASSERT_EQ(e.headers.size(), 1u);
  EXPECT_EQ(e.headers[0].first, "Retry-After");

  // "(limit KEY = VALUE)" typed into a message is not parsed into a param.
  const HttpError typed = to_http_error(Error(Errc::resource_exhausted, "x (limit max-in-flight = 4)"));
  EXPECT_TRUE(err(typed)["param"].is_null());
  EXPECT_FALSE(err(typed).contains("limit"));

  const HttpError full = to_http_error(
      Error(Errc::no_space, "llmd's storage is full").with_limit("disk-reserve-mib", 256, 10));
  EXPECT_EQ(full.status, 507u);
  EXPECT_EQ(err(full)["code"], "insufficient_storage");
  EXPECT_EQ(err(full)["param"], "disk-reserve-mib");
  EXPECT_TRUE(full.headers.empty());
}

TEST(ApiErrors, FieldsAndPlainErrors) {
  const HttpError field = to_http_error(Error(Errc::invalid_argument, "max_tokens must be ...").with_param("max_tokens"));
  EXPECT_EQ(field.status, 400u);
  EXPECT_EQ(err(field)["code"], "invalid_request");
  EXPECT_EQ(err(field)["param"], "max_tokens");
  EXPECT_FALSE(err(field).contains("limit"));

  const HttpError plain = to_http_error(Error(Errc::unavailable, "the daemon is shutting down"));
  EXPECT_EQ(plain.status, 503u);
  EXPECT_EQ(err(plain)["code"], "unavailable");
  EXPECT_TRUE(err(plain)["param"].is_null());
  EXPECT_EQ(plain.body.dump(),
            R"({"error":{"code":"unavailable","message":"the daemon is shutting down","param":null,"type":"server_error"}})");
}

}  // namespace
}  // namespace llmd::ipc
