// The pure parts of the D-Bus front end: the one Errc -> error name mapping, text made fit for a
// D-Bus string, and which bus a `bus` setting names.
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <string>
#include <vector>

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

// The name comes from the code alone; the details (reason, param, limit) leave the name and the
// message as they are.
TEST(DbusErrors, DetailsKeepTheNameAndMessage) {
  const BusError context = to_bus_error(Error(Errc::invalid_argument, "context_length_exceeded: the prompt has 9 tokens")
                                            .with_limit("prompt", 8, 9)
                                            .with_reason(Reason::context_length_exceeded));
  EXPECT_EQ(context.name, "org.llmd.LLM1.Error.InvalidArgument");
  EXPECT_EQ(context.message, "context_length_exceeded: the prompt has 9 tokens");
  const BusError limit =
      to_bus_error(Error(Errc::resource_exhausted, "too many (limit max-in-flight = 2)").with_limit("max-in-flight", 2, 2));
  EXPECT_EQ(limit.name, "org.llmd.LLM1.Error.QuotaExceeded");
  EXPECT_EQ(limit.message, "too many (limit max-in-flight = 2)");
}

TEST(DbusErrors, TextIsMadeFitForADbusString) {
  EXPECT_EQ(bus_text("plain ünïcode"), "plain ünïcode");
  EXPECT_EQ(bus_text(std::string("a\0b", 3)), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(bus_text("bad \xFF byte"), "bad \xEF\xBF\xBD byte");
  EXPECT_EQ(bus_text("cut \xE2\x82"), "cut \xEF\xBF\xBD");
}

// sd-bus refuses strings with Unicode noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF) although
// they are valid UTF-8: bus_text must replace them too, or the message (a Token signal with such a
// piece, a session record with such a system prompt) cannot be built. Found by fuzz_dbus_options.
TEST(DbusErrors, TextSdBusRefusesIsReplaced) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  sd_bus* bus = nullptr;  // connected to nothing: enough to build messages
  ASSERT_GE(sd_bus_new(&bus), 0);
  ASSERT_GE(sd_bus_set_fd(bus, sv[0], sv[0]), 0);
  ASSERT_GE(sd_bus_start(bus), 0);
  const std::vector<std::string> texts = {"\xEF\xBF\xBF", "a\xEF\xBF\xBE", "\xEF\xB7\x90", "\xEF\xB7\xAF",
                                          "\xF0\x9F\xBF\xBF", "\xF4\x8F\xBF\xBE", "fine \xE2\x82\xAC"};
  for (const auto& t : texts) {
    sd_bus_message* m = nullptr;
    ASSERT_GE(sd_bus_message_new_method_call(bus, &m, "org.x", "/x", "org.x", "M"), 0);
    EXPECT_GE(sd_bus_message_append_basic(m, 's', bus_text(t).c_str()), 0) << bus_text(t);
    sd_bus_message_unref(m);
  }
  EXPECT_EQ(bus_text("\xEF\xBF\xBF"), "\xEF\xBF\xBD");
  EXPECT_EQ(bus_text("a\xEF\xB7\x90" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(bus_text("\xEF\xB7\xB0"), "\xEF\xB7\xB0");  // U+FDF0 is an ordinary character
  EXPECT_EQ(bus_text("fine \xE2\x82\xAC"), "fine \xE2\x82\xAC");
  sd_bus_unref(bus);
  ::close(sv[1]);
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
