// The pure parts of the D-Bus front end: the one Errc -> error name mapping, text made fit for a
// D-Bus string, and which bus a `bus` setting names.
#include <gtest/gtest.h>

#include "ipc/dbus_connection.h"
#include "ipc/dbus_errors.h"

namespace llmd::ipc {
namespace {

TEST(DbusErrors, EveryErrcHasANamedError) {
  const std::vector<std::pair<Errc, std::string>> cases = {
      {Errc::invalid_argument, "org.llmd.LLM1.Error.InvalidArgument"},
      {Errc::unsupported, "org.llmd.LLM1.Error.InvalidArgument"},
      {Errc::not_found, "org.llmd.LLM1.Error.NotFound"},
      {Errc::permission_denied, "org.llmd.LLM1.Error.PermissionDenied"},
      {Errc::resource_exhausted, "org.llmd.LLM1.Error.QuotaExceeded"},
      {Errc::no_space, "org.llmd.LLM1.Error.NoSpace"},
      {Errc::busy, "org.llmd.LLM1.Error.Busy"},
      {Errc::unavailable, "org.llmd.LLM1.Error.Unavailable"},
      {Errc::cancelled, "org.llmd.LLM1.Error.Cancelled"},
      {Errc::corrupt, "org.llmd.LLM1.Error.Failed"},
      {Errc::io_error, "org.llmd.LLM1.Error.Failed"},
      {Errc::internal, "org.llmd.LLM1.Error.Failed"},
  };
  for (const auto& [code, name] : cases) {
    const BusError e = to_bus_error(Error(code, "what happened"));
    EXPECT_EQ(e.name, name) << errc_name(code);
    EXPECT_EQ(e.message, "what happened");
  }
  // Per-uid limits keep the key in the message.
  EXPECT_EQ(to_bus_error(Error(Errc::resource_exhausted, "too many (limit max-sessions-per-user = 1)")).message,
            "too many (limit max-sessions-per-user = 1)");
}

TEST(DbusErrors, TextIsMadeFitForADbusString) {
  EXPECT_EQ(bus_text("plain ünïcode"), "plain ünïcode");
  EXPECT_EQ(bus_text(std::string("a\0b", 3)), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(bus_text("bad \xFF byte"), "bad \xEF\xBF\xBD byte");
  EXPECT_EQ(bus_text("cut \xE2\x82"), "cut \xEF\xBF\xBD");
}

TEST(DbusBusSetting, NamesTheBus) {
  EXPECT_EQ(resolve_bus("none", "unix:path=/x"), std::nullopt);
  EXPECT_EQ(resolve_bus("auto", "unix:path=/x"), "session");
  EXPECT_EQ(resolve_bus("auto", ""), "system");
  EXPECT_EQ(resolve_bus("auto", nullptr), "system");
  EXPECT_EQ(resolve_bus("system", "unix:path=/x"), "system");
  EXPECT_EQ(resolve_bus("session", nullptr), "session");
  EXPECT_EQ(resolve_bus("unix:path=/run/x", nullptr), "unix:path=/run/x");
}

}  // namespace
}  // namespace llmd::ipc
