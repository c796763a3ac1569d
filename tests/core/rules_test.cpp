// The core's one-place rules, without a model: what fits a sequence (check_context), the app-name
// rule (valid_client_name, check_app, client_of) and the details a per-uid limit carries.
#include <unistd.h>

#include <cctype>
#include <clocale>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "core/chat_turns.h"
#include "core/service.h"

namespace llmd::core {
namespace {

TEST(ContextRule, TurnKeepsACellForTheFirstGeneratedToken) {
  EXPECT_TRUE(check_context(0, 99, 100, SeqUse::turn).ok());
  EXPECT_TRUE(check_context(60, 39, 100, SeqUse::turn).ok());
  const Status full = check_context(60, 40, 100, SeqUse::turn, "content");
  ASSERT_FALSE(full.ok());
  const Error& e = full.error();
  EXPECT_EQ(e.code(), Errc::invalid_argument);
  EXPECT_EQ(e.reason(), Reason::context_length_exceeded);
  EXPECT_EQ(e.param(), "content");
  EXPECT_EQ(e.detail().limit, 100u);
  EXPECT_EQ(e.detail().actual, 100u);
  EXPECT_EQ(e.message(), "context_length_exceeded: the session holds 60 tokens and the message adds 40; the context holds 100");
  EXPECT_EQ(check_context(0, 100, 100, SeqUse::turn).error().message(),
            "context_length_exceeded: the prompt has 100 tokens; the context holds 100");
}

// An audit recomputes a stored history, which may fill its whole sequence: one token more than a
// turn may bring, and no more.
TEST(ContextRule, AuditMayFillTheWholeSequence) {
  EXPECT_TRUE(check_context(0, 100, 100, SeqUse::audit).ok());
  EXPECT_FALSE(check_context(0, 101, 100, SeqUse::audit).ok());
  EXPECT_EQ(max_stored_tokens(100), 101u);
}

TEST(AppNameRule, OneToSixtyFourOfAFewAsciiCharacters) {
  EXPECT_TRUE(valid_client_name("editor"));
  EXPECT_TRUE(valid_client_name("batch-job_2.0"));
  EXPECT_TRUE(valid_client_name(std::string(kMaxClientName, 'a')));
  EXPECT_FALSE(valid_client_name(""));
  EXPECT_FALSE(valid_client_name(std::string(kMaxClientName + 1, 'a')));
  for (const char* bad : {"a b", "a/b", "../x", "a\n", "caf\xC3\xA9", "\xE9t\xE9", "x:y"}) {
    EXPECT_FALSE(valid_client_name(bad)) << bad;
  }
  EXPECT_FALSE(valid_client_name(std::string("a\0b", 3)));
}

// The rule is ASCII by value whatever the locale (std::isalnum follows LC_CTYPE, where a Latin-1
// locale takes 0xE9 as a letter).
// A Latin-1 locale, where isalnum(0xE9) is true. A fresh machine has none installed, so one is
// compiled from the `locales` package's sources (scripts/install-deps.sh) into a scratch directory
// that LOCPATH points at.
std::string latin1_locale() {
  for (const char* name : {"en_US.ISO-8859-1", "de_DE.ISO-8859-1"}) {
    if (std::setlocale(LC_CTYPE, name) != nullptr) return name;
  }
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("llmd-locale-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string cmd = "localedef -i en_US -f ISO-8859-1 '" + (dir / "en_US.ISO-8859-1").string() + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) return {};
  ::setenv("LOCPATH", dir.c_str(), 1);
  return std::setlocale(LC_CTYPE, "en_US.ISO-8859-1") != nullptr ? "en_US.ISO-8859-1" : "";
}

TEST(AppNameRule, DoesNotFollowTheLocale) {
  const std::string before = std::setlocale(LC_CTYPE, nullptr);
  const std::string name = latin1_locale();
  ASSERT_FALSE(name.empty()) << "no Latin-1 locale, and localedef could not make one (install the locales package)";
  ASSERT_NE(std::isalnum(0xE9), 0) << "the locale does not make 0xE9 a letter: the test would prove nothing";
  EXPECT_FALSE(valid_client_name("\xE9t\xE9")) << name;
  EXPECT_TRUE(valid_client_name("ete")) << name;
  std::setlocale(LC_CTYPE, before.c_str());
  ::unsetenv("LOCPATH");
  std::filesystem::remove_all(std::filesystem::temp_directory_path() / ("llmd-locale-" + std::to_string(::getpid())));
}

TEST(AppNameRule, CheckAppAndTheSchedulersClient) {
  EXPECT_TRUE(check_app("").ok());
  EXPECT_TRUE(check_app("notes").ok());
  const Status bad = check_app("no spaces allowed");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_EQ(bad.error().param(), "app");
  EXPECT_NE(bad.error().message().find("app"), std::string::npos);
  EXPECT_EQ(client_of(1000, "notes"), "1000/notes");
  EXPECT_EQ(client_of(1000, ""), "1000");
  EXPECT_EQ(client_of(1000, "bad app/../"), "1000");  // a session's app stored before the rule
}

TEST(Limits, OverLimitCarriesTheKeyTheLimitAndWhatWasReached) {
  const Error e = over_limit("uid 7 has 3 sessions stored already", "max-sessions-per-user", 3, 3);
  EXPECT_EQ(e.code(), Errc::resource_exhausted);
  EXPECT_EQ(e.param(), "max-sessions-per-user");
  EXPECT_EQ(e.detail().limit, 3u);
  EXPECT_EQ(e.detail().actual, 3u);
  EXPECT_EQ(e.message(), "uid 7 has 3 sessions stored already (limit max-sessions-per-user = 3)");
  // Context added on the way up keeps the details.
  const Error wrapped = e.with_context("creating a session");
  EXPECT_EQ(wrapped.param(), "max-sessions-per-user");
  EXPECT_EQ(wrapped.detail().limit, 3u);
}

}  // namespace
}  // namespace llmd::core
