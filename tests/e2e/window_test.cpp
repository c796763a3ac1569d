// Sessions that outlive the context (core/context_window.h) against the real llmd on --ctx 256:
// drop_oldest answers every turn and keeps the transcript whole, error refuses once full, the
// window is reported (usage.window, the "window" SSE event, GET /v1/sessions/{id}, llmctl), a
// moved window answers exactly as a fresh session holding just the kept turns, a smaller --ctx
// strands nothing, and a message that cannot fit alone is refused naming the limit.
#include <filesystem>
#include <map>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

DaemonOptions small_ctx(std::vector<std::string> more = {}) {
  DaemonOptions o;
  o.args = {"--ctx", "256", "--slots", "1", "--flash-attn", "off"};
  o.args.insert(o.args.end(), more.begin(), more.end());
  return o;
}

std::string create(const client::HttpClient& c, const std::string& overflow) {
  nlohmann::json body = {{"system_prompt", "You tell short stories."}};
  if (!overflow.empty()) body["overflow"] = overflow;
  auto r = call(c, "POST", "/v1/sessions", body);
  EXPECT_EQ(r.status, 201u) << r.raw;
  return r.body.value("id", "");
}

JsonReply say(const client::HttpClient& c, const std::string& id, const std::string& text, int max_tokens = 24) {
  return session_turn(c, id, text, max_tokens);
}

std::string turn_text(int i) { return "Tell me about the number " + std::to_string(i) + "."; }

std::string sqlite(const std::string& db, const std::string& sql) {
  const auto r = run_program({"/usr/bin/sqlite3", db, sql});
  EXPECT_EQ(r.exit_code, 0) << sql << ": " << r.err;
  std::string out = r.out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// 50 turns under drop_oldest: every one answered, streamed with the window event before the text
// when it moved, the transcript whole, the window shown.
TEST(Window, DropOldestAnswersFiftyTurnsAndKeepsTheWholeTranscript) {
  DaemonProcess d(scratch_dir(), small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string id = create(c, "drop_oldest");
  int moves = 0;
  std::uint64_t dropped = 0;
  for (int i = 0; i < 50; ++i) {
    auto body = greedy_body(24);
    body["content"] = turn_text(i);
    const Streamed s = stream(c, "/v1/sessions/" + id + "/messages", body);
    ASSERT_EQ(s.status, 200u) << "turn " << i;
    ASSERT_TRUE(s.done_marker) << "turn " << i;
    ASSERT_GE(s.events.size(), 2u);
    const auto& last = s.events.back();
    ASSERT_FALSE(last.contains("error")) << last.dump();
    const auto& w = last["usage"]["window"];
    ASSERT_TRUE(w.is_object()) << last.dump();
    if (w["moved"].get<bool>()) {
      ++moves;
      dropped += w["dropped_tokens"].get<std::uint64_t>();
      EXPECT_GT(w["dropped_messages"].get<int>(), 0);
      EXPECT_EQ(w["dropped_messages"].get<int>() % 2, 0) << "whole turns leave the window";
      // The distinct event: right after the first chunk (the role), before any text, shaped as an
      // empty chunk so that SDKs that ignore event names take it as one.
      const auto& ev = s.events[1];
      ASSERT_TRUE(ev.contains("window")) << ev.dump();
      EXPECT_EQ(ev["window"], w);
      EXPECT_EQ(ev["choices"][0]["delta"], nlohmann::json::object());
    } else {
      for (const auto& ev : s.events) EXPECT_FALSE(ev.contains("window")) << ev.dump();
    }
  }
  EXPECT_GE(moves, 3);
  const auto s = call(c, "GET", "/v1/sessions/" + id);
  ASSERT_EQ(s.status, 200u);
  EXPECT_EQ(s.body["messages"].size(), 101u) << "the transcript stays whole";
  EXPECT_LE(s.body["n_tokens"].get<int>(), 257);
  const auto& w = s.body["window"];
  EXPECT_EQ(w["overflow"], "drop_oldest");
  EXPECT_FALSE(w["overflow_default"].get<bool>());
  EXPECT_EQ(w["dropped_tokens"].get<std::uint64_t>(), dropped);
  const int first = w["first_message"].get<int>();
  EXPECT_GT(first, 1);
  int outside = 0;
  for (std::size_t i = 0; i < s.body["messages"].size(); ++i) {
    const auto& m = s.body["messages"][i];
    EXPECT_EQ(m["in_window"].get<bool>(), m["role"] == "system" || static_cast<int>(i) >= first) << i;
    outside += m["in_window"].get<bool>() ? 0 : 1;
  }
  EXPECT_EQ(w["dropped_messages"].get<int>(), outside);
  // llmctl shows it.
  const auto shown = run_program({llmctl_binary(), "--socket", d.socket(), "sessions", "show", id});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("window: from message " + std::to_string(first)), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("overflow: drop_oldest"), std::string::npos) << shown.out;
}

// The same conversation under error: refused once full (context_length_exceeded, naming the
// limit), and refused again, nothing stored of it.
TEST(Window, ErrorRefusesOnceFull) {
  DaemonProcess d(scratch_dir(), small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string id = create(c, "error");
  int answered = 0;
  JsonReply refused;
  for (int i = 0; i < 50; ++i) {
    auto r = say(c, id, turn_text(i));
    if (r.status != 200u) {
      refused = r;
      break;
    }
    EXPECT_FALSE(r.body["usage"]["window"]["moved"].get<bool>());
    ++answered;
  }
  ASSERT_GT(answered, 1);
  ASSERT_LT(answered, 50) << "a 256-token context never filled";
  EXPECT_EQ(refused.status, 400u) << refused.raw;
  EXPECT_EQ(refused.body["error"]["code"], "context_length_exceeded") << refused.raw;
  EXPECT_EQ(refused.body["error"]["param"], "content") << refused.raw;
  EXPECT_EQ(refused.body["error"]["limit"], 256) << refused.raw;
  EXPECT_EQ(say(c, id, turn_text(99)).status, 400u);
  const auto s = call(c, "GET", "/v1/sessions/" + id);
  EXPECT_EQ(s.body["messages"].size(), 1u + 2u * static_cast<unsigned>(answered));
  EXPECT_EQ(s.body["window"]["overflow"], "error");
}

std::vector<std::int32_t> tokens_of(const std::string& hex) {
  std::vector<std::int32_t> out;
  for (std::size_t i = 0; i + 8 <= hex.size(); i += 8) {
    std::uint32_t v = 0;
    for (int b = 3; b >= 0; --b) v = (v << 8) | static_cast<std::uint32_t>(std::stoul(hex.substr(i + b * 2, 2), nullptr, 16));
    out.push_back(static_cast<std::int32_t>(v));
  }
  return out;
}

// A moved window is exactly the system prompt's tokens and the kept turns' tokens, cut from the old
// sequence; and it answers exactly as a fresh session holding just those turns: one written into
// sessions.db with the same system prompt, kept messages and tokens, whose KV llmd computes from
// nothing after a restart (greedy, flash attention off, one slot).
TEST(Window, AMovedWindowAnswersAsAFreshSessionHoldingJustTheKeptTurns) {
  const std::string dir = scratch_dir();
  const std::string db = dir + "/state/sessions.db";
  std::string id, moved_answer, moved_prompt;
  std::vector<std::int32_t> before;
  {
    DaemonProcess d(dir, small_ctx());
    ASSERT_TRUE(d.start()) << d.log();
    id = create(d.client(), "");  // the default policy: drop_oldest
    for (int i = 0; i < 30 && moved_answer.empty(); ++i) {
      // The sequence before the turn (the WAL is read by sqlite3 too).
      before = tokens_of(sqlite(db, "SELECT hex(tokens) FROM sessions WHERE id = '" + id + "'"));
      auto r = say(d.client(), id, turn_text(i));
      ASSERT_EQ(r.status, 200u) << r.raw;
      if (r.body["usage"]["window"]["moved"].get<bool>()) {
        moved_answer = r.body["message"]["content"];
        moved_prompt = turn_text(i);
      }
    }
    ASSERT_FALSE(moved_answer.empty()) << "the window never moved";
    ASSERT_EQ(d.stop(), 0);
  }
  // The window's tokens: the head and a suffix of the old sequence, cut at a message boundary.
  const auto after = tokens_of(sqlite(db, "SELECT hex(tokens) FROM sessions WHERE id = '" + id + "'"));
  const int first = std::stoi(sqlite(db, "SELECT window_first_message FROM sessions WHERE id = '" + id + "'"));
  const int user_seq = std::stoi(sqlite(db, "SELECT max(seq) - 1 FROM messages WHERE session_id = '" + id + "'"));
  const std::size_t head = std::stoul(sqlite(db, "SELECT token_end FROM messages WHERE session_id = '" + id + "' AND seq = 0"));
  const std::size_t history = user_seq > first
                                  ? std::stoul(sqlite(db, "SELECT token_end FROM messages WHERE session_id = '" + id +
                                                              "' AND seq = " + std::to_string(user_seq - 1)))
                                  : head;
  ASSERT_LE(history, after.size());
  ASSERT_GE(history, head);
  const std::size_t kept = history - head;
  ASSERT_LE(kept, before.size());
  EXPECT_TRUE(std::equal(after.begin(), after.begin() + static_cast<std::ptrdiff_t>(head), before.begin()));
  EXPECT_TRUE(std::equal(after.begin() + static_cast<std::ptrdiff_t>(head), after.begin() + static_cast<std::ptrdiff_t>(history),
                         before.end() - static_cast<std::ptrdiff_t>(kept)))
      << "the kept turns' tokens are the old sequence's last ones";

  // The reference session: the same owner, system prompt and kept messages (renumbered), and the
  // window's tokens up to the moved turn's message.
  const std::string ref = "ses_00000000000000000000abcd";
  sqlite(db, "INSERT INTO sessions(id, uid, app, system_prompt, created_ms, updated_ms, model_id, tokens, overflow,"
             " window_first_message, dropped_tokens) SELECT '" + ref + "', uid, app, system_prompt, created_ms,"
             " updated_ms, model_id, substr(tokens, 1, " + std::to_string(4 * history) + "), 'error', 0, 0"
             " FROM sessions WHERE id = '" + id + "'");
  sqlite(db, "INSERT INTO messages(session_id, seq, role, content, created_ms, token_end) SELECT '" + ref +
             "', CASE WHEN seq = 0 THEN 0 ELSE seq - " + std::to_string(first) + " + 1 END, role, content, created_ms,"
             " token_end FROM messages WHERE session_id = '" + id + "' AND (seq = 0 OR (seq >= " + std::to_string(first) +
             " AND seq < " + std::to_string(user_seq) + "))");
  DaemonProcess again(dir, small_ctx());
  ASSERT_TRUE(again.start()) << again.log();
  const auto r = say(again.client(), ref, moved_prompt);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_FALSE(r.body["usage"]["window"]["moved"].get<bool>());
  EXPECT_EQ(r.body["message"]["content"], moved_answer);
}

// Sessions made under a larger --ctx continue under a smaller one: drop_oldest moves their window
// (no damage logged, nothing re-derived); error refuses with the limit.
TEST(Window, ASmallerCtxStrandsNoSession) {
  const std::string dir = scratch_dir();
  std::string moving, strict;
  {
    DaemonOptions big = small_ctx();
    big.args[1] = "1024";
    DaemonProcess d(dir, big);
    ASSERT_TRUE(d.start()) << d.log();
    moving = create(d.client(), "drop_oldest");
    strict = create(d.client(), "error");
    for (int i = 0; i < 5; ++i) {
      const auto a = say(d.client(), moving, turn_text(i), 32);
      ASSERT_EQ(a.status, 200u) << a.raw;
      const auto b = say(d.client(), strict, turn_text(i), 32);
      ASSERT_EQ(b.status, 200u) << b.raw;
    }
    ASSERT_GT(call(d.client(), "GET", "/v1/sessions/" + moving).body["n_tokens"].get<int>(), 300);
    ASSERT_EQ(d.stop(), 0);
  }
  DaemonProcess d(dir, small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto r = say(d.client(), moving, "And then?");
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_TRUE(r.body["usage"]["window"]["moved"].get<bool>()) << r.raw;
  EXPECT_EQ(d.log().find("damaged"), std::string::npos) << d.log();
  const auto s = call(d.client(), "GET", "/v1/sessions/" + moving);
  EXPECT_LE(s.body["n_tokens"].get<int>(), 257);
  EXPECT_EQ(s.body["messages"].size(), 1u + 2u * 6u);
  EXPECT_EQ(say(d.client(), moving, "Once more.").status, 200u);
  const auto refused = say(d.client(), strict, "And then?");
  EXPECT_EQ(refused.status, 400u) << refused.raw;
  EXPECT_EQ(refused.body["error"]["code"], "context_length_exceeded") << refused.raw;
}

// Only a message that cannot fit even alone is refused, naming the field and the limit; the
// session goes on.
TEST(Window, AMessageTooLargeAloneIsRefusedNamingTheLimit) {
  DaemonProcess d(scratch_dir(), small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  const std::string id = create(c, "drop_oldest");
  ASSERT_EQ(say(c, id, turn_text(1)).status, 200u);
  std::string huge;
  for (int i = 0; i < 120; ++i) huge += "cat dog ";
  const auto r = say(c, id, huge);
  EXPECT_EQ(r.status, 400u) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "context_length_exceeded") << r.raw;
  EXPECT_EQ(r.body["error"]["param"], "content") << r.raw;
  EXPECT_EQ(r.body["error"]["limit"], 256) << r.raw;
  EXPECT_EQ(say(c, id, turn_text(2)).status, 200u);
  // The same for a stateless chat: the last message alone.
  nlohmann::json chat = greedy_body(8);
  chat["messages"] = {{{"role", "user"}, {"content", huge}}};
  const auto s = call(c, "POST", "/v1/chat/completions", chat);
  EXPECT_EQ(s.status, 400u) << s.raw;
  EXPECT_EQ(s.body["error"]["param"], "messages") << s.raw;
}

// Stateless requests: a chat history that does not fit loses its oldest whole turns under
// drop_oldest (said in usage.window and in the stream's "window" event), is refused under error;
// sliding is refused (a stateless request keeps no KV to shift); a completion takes only error.
TEST(Window, StatelessChatsDropTheirOldestTurnsOrAreRefused) {
  DaemonProcess d(scratch_dir(), small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  nlohmann::json messages = nlohmann::json::array({{{"role", "system"}, {"content", "You tell short stories."}}});
  for (int i = 0; i < 20; ++i) {
    messages.push_back({{"role", "user"}, {"content", turn_text(i)}});
    messages.push_back({{"role", "assistant"}, {"content", "Once upon a time there was a little cat."}});
  }
  messages.push_back({{"role", "user"}, {"content", "And then?"}});
  nlohmann::json body = greedy_body(16);
  body["messages"] = messages;
  const auto r = call(c, "POST", "/v1/chat/completions", body);  // the default: drop_oldest
  ASSERT_EQ(r.status, 200u) << r.raw;
  const auto& w = r.body["usage"]["window"];
  EXPECT_TRUE(w["moved"].get<bool>()) << r.raw;
  EXPECT_GT(w["dropped_messages"].get<int>(), 0);
  EXPECT_EQ(w["dropped_messages"].get<int>() % 2, 0);
  EXPECT_EQ(messages[w["first_message"].get<std::size_t>()]["role"], "user");
  EXPECT_LE(r.body["usage"]["prompt_tokens"].get<int>(), 256);
  // The stream says it with a named event before the text.
  body["stream"] = true;
  const std::string payload = body.dump();
  const std::string raw = raw_exchange(d.socket(), "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                                   "Content-Type: application/json\r\nConnection: close\r\n"
                                                   "Content-Length: " + std::to_string(payload.size()) +
                                                   "\r\n\r\n" + payload);
  const auto at = raw.find("event: window\ndata: {");
  EXPECT_NE(at, std::string::npos) << raw;
  EXPECT_LT(at, raw.find("\"finish_reason\":\"")) << raw;
  // error: refused; sliding: refused for a stateless request (not for a session); completions: error only.
  body["stream"] = false;
  body["overflow"] = "error";
  const auto e = call(c, "POST", "/v1/chat/completions", body);
  EXPECT_EQ(e.status, 400u) << e.raw;
  EXPECT_EQ(e.body["error"]["code"], "context_length_exceeded") << e.raw;
  body["overflow"] = "sliding";
  const auto sl = call(c, "POST", "/v1/chat/completions", body);
  EXPECT_EQ(sl.status, 400u) << sl.raw;
  EXPECT_EQ(sl.body["error"]["param"], "overflow") << sl.raw;
  EXPECT_NE(sl.body["error"]["message"].get<std::string>().find("use a session"), std::string::npos);
  EXPECT_EQ(call(c, "POST", "/v1/sessions", nlohmann::json{{"overflow", "sliding"}}).status, 201u);
  const auto unknown = call(c, "POST", "/v1/sessions", nlohmann::json{{"overflow", "truncate"}});
  EXPECT_EQ(unknown.status, 400u) << unknown.raw;
  const auto cmpl = call(c, "POST", "/v1/completions",
                         nlohmann::json{{"prompt", "Once"}, {"max_tokens", 4}, {"overflow", "drop_oldest"}});
  EXPECT_EQ(cmpl.status, 400u) << cmpl.raw;
  EXPECT_EQ(cmpl.body["error"]["param"], "overflow") << cmpl.raw;
  const std::string id = create(c, "");
  auto turn = greedy_body(4);
  turn["content"] = "Hi";
  turn["overflow"] = "error";
  turn["stream"] = false;
  const auto per_turn = call(c, "POST", "/v1/sessions/" + id + "/messages", turn);
  EXPECT_EQ(per_turn.status, 400u) << per_turn.raw;
  EXPECT_EQ(per_turn.body["error"]["param"], "overflow") << per_turn.raw;
}

// A stateless chat with tools that does not fit loses its oldest turns like any other: the tools
// stay described in the shortened prompt and the required call still comes back.
TEST(Window, AStatelessChatWithToolsDropsItsOldestTurnsAndStillCalls) {
  DaemonOptions o = small_ctx();
  o.args[1] = "1024";
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  nlohmann::json messages = nlohmann::json::array({{{"role", "system"}, {"content", "You help."}}});
  for (int i = 0; i < 40; ++i) {
    messages.push_back({{"role", "user"}, {"content", turn_text(i)}});
    messages.push_back({{"role", "assistant"}, {"content", "Once upon a time there was a little cat."}});
  }
  messages.push_back({{"role", "user"}, {"content", "What is the weather in Paris?"}});
  nlohmann::json body = greedy_body(120);
  body["messages"] = messages;
  body["tools"] = nlohmann::json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])");
  body["tool_choice"] = "required";
  const auto r = call(d.client(), "POST", "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200u) << r.raw;
  EXPECT_TRUE(r.body["usage"]["window"]["moved"].get<bool>()) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "tool_calls") << r.raw;
  EXPECT_EQ(r.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather") << r.raw;
}

// llmctl (through libllmclient): sessions create --overflow sets the policy; chat says when the
// window moved (llmc_result's window fields) and goes on answering.
TEST(Window, LlmctlCreatesWithAPolicyAndChatSaysWhenTheWindowMoved) {
  DaemonProcess d(scratch_dir(), small_ctx());
  ASSERT_TRUE(d.start()) << d.log();
  const auto created = run_program({llmctl_binary(), "--socket", d.socket(), "sessions", "create", "--overflow", "error"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  std::string id = created.out;
  while (!id.empty() && id.back() == '\n') id.pop_back();
  EXPECT_EQ(call(d.client(), "GET", "/v1/sessions/" + id).body["window"]["overflow"], "error");
  const auto bad = run_program({llmctl_binary(), "--socket", d.socket(), "sessions", "create", "--overflow", "slide"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("sliding"), std::string::npos) << bad.err;
  std::string lines;
  for (int i = 0; i < 12; ++i) lines += turn_text(i) + "\n";
  const auto chat = run_program({llmctl_binary(), "--socket", d.socket(), "chat", "--overflow", "drop_oldest"}, lines);
  EXPECT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_NE(chat.err.find("left the model's window"), std::string::npos) << chat.err;
}

}  // namespace
}  // namespace llmd::test
