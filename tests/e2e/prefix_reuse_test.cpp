// Stateless requests reuse the KV of the same uid's earlier ones (issue 15): the same history sent
// again is served from a slot, from RAM chunks, from disk chunks and after kill -9 + restart, with
// the greedy answer of a cold run; a conversation resent turn by turn reuses its history; another
// uid sending the identical history reuses nothing; usage follows OpenAI's rule (cached_tokens is
// part of prompt_tokens) on every generating endpoint.
#include <chrono>
#include <filesystem>
#include <thread>
#include <string>
#include <vector>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

DaemonOptions with(std::vector<std::string> args) {
  DaemonOptions o;
  o.args = std::move(args);
  return o;
}

// A conversation of a few hundred tokens, as an OpenAI client resends it.
nlohmann::json history_body(const std::string& last_user, int max_tokens = 16) {
  nlohmann::json body = greedy_body(max_tokens);
  body["stream"] = false;
  body["messages"] = nlohmann::json::array(
      {{{"role", "system"}, {"content", "You tell short stories about a girl named Lily and her dog Max."}},
       {{"role", "user"}, {"content", "Once upon a time there was a little girl named Lily who liked to play in the "
                                      "park with her dog Max and her friends every day after school."}},
       {{"role", "assistant"}, {"content", "Lily ran to the park with Max. They saw a big red ball under a tree and "
                                           "Max barked at it. Lily laughed and threw the ball high in the sky."}},
       {{"role", "user"}, {"content", last_user}}});
  return body;
}

struct Answer {
  std::string text;
  nlohmann::json usage;
};

Answer chat(const client::HttpClient& c, const nlohmann::json& body) {
  auto r = call(c, "POST", "/v1/chat/completions", body);
  EXPECT_EQ(r.status, 200u) << r.raw;
  if (r.status != 200) return {};
  return {r.body["choices"][0]["message"]["content"].get<std::string>(), r.body["usage"]};
}

int prompt_of(const Answer& a) { return a.usage.value("prompt_tokens", 0); }
int cached_of(const Answer& a) { return a.usage["prompt_tokens_details"].value("cached_tokens", 0); }

const std::string kAsk = "What did Lily and Max do next in the park?";
const std::string kOther = "Tell me about a boy named Tim who had a toy car and a cat.";

// One slot, flash attention off (placement in the pool does not change the numbers), chunks of 16.
std::vector<std::string> one_slot(const char* ram_mib) {
  return {"--slots", "1", "--flash-attn", "off", "--chunk-tokens", "16", "--kv-ram-mib", ram_mib};
}

TEST(PrefixReuse, TheSameHistoryIsReusedFromASlotFromChunksAndAfterKill9) {
  const auto body = history_body(kAsk);
  std::string cold;
  int prompt = 0;
  {
    // The reference: a cold daemon computes the whole prompt.
    DaemonProcess d(scratch_dir(), with(one_slot("1024")));
    ASSERT_TRUE(d.start()) << d.log();
    const Answer a = chat(d.client(), body);
    cold = a.text;
    prompt = prompt_of(a);
    ASSERT_GT(prompt, 100);
    EXPECT_EQ(cached_of(a), 0);
  }
  for (const char* ram_mib : {"1024", "0"}) {  // chunks in RAM (T1), then on disk only (T2)
    SCOPED_TRACE(std::string("kv-ram-mib ") + ram_mib);
    const std::string dir = scratch_dir();
    {
      DaemonProcess d(dir, with(one_slot(ram_mib)));
      ASSERT_TRUE(d.start()) << d.log();
      const auto c = d.client();
      const Answer first = chat(c, body);
      EXPECT_EQ(first.text, cold);
      EXPECT_EQ(cached_of(first), 0);
      // Again: resident in the slot (all but the token sampled last).
      const Answer resident = chat(c, body);
      EXPECT_EQ(resident.text, cold);
      EXPECT_EQ(prompt_of(resident), prompt);
      EXPECT_GE(cached_of(resident), prompt * 9 / 10) << resident.usage;
      EXPECT_EQ(resident.usage.value("loaded_tokens", -1), 0);
      // Another conversation takes the only slot; the first comes back from its chunks.
      (void)chat(c, history_body(kOther));
      const Answer loaded = chat(c, body);
      EXPECT_EQ(loaded.text, cold);
      EXPECT_GE(loaded.usage.value("loaded_tokens", 0), prompt * 9 / 10) << loaded.usage;
      EXPECT_EQ(cached_of(loaded), loaded.usage.value("loaded_tokens", 0));
      const auto status = call(c, "GET", "/v1/status").body["kv"];
      EXPECT_GE(status["prefix_cache"].value("entries", 0), 2) << status;
      EXPECT_EQ(status.value("bad_chunks", -1), 0);
      if (std::string(ram_mib) == "0") {
        EXPECT_GT(status["disk"].value("chunks", 0), 0) << status;
      }
      d.kill9();
    }
    // After kill -9 the entries are still there (the chunk index and files outlive the process).
    DaemonProcess again(dir, with(one_slot(ram_mib)));
    ASSERT_TRUE(again.start()) << again.log();
    const Answer after = chat(again.client(), body);
    EXPECT_EQ(after.text, cold);
    EXPECT_GE(after.usage.value("loaded_tokens", 0), prompt * 9 / 10) << after.usage;
  }
}

TEST(PrefixReuse, AConversationResentTurnByTurnReusesItsHistory) {
  DaemonProcess d(scratch_dir(), with({"--slots", "2", "--chunk-tokens", "16"}));
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  nlohmann::json body = history_body(kAsk, 12);
  int previous_prompt = 0;
  for (int turn = 0; turn < 4; ++turn) {
    const Answer a = chat(c, body);
    if (turn > 0) {
      // Everything the previous request held (its prompt and the answer, as the template renders
      // it) is reused; only the new user message and the template's joints are computed.
      EXPECT_GE(cached_of(a), previous_prompt) << "turn " << turn << ": " << a.usage;
    }
    EXPECT_LE(cached_of(a), prompt_of(a));
    previous_prompt = prompt_of(a);
    body["messages"].push_back({{"role", "assistant"}, {"content", a.text}});
    body["messages"].push_back({{"role", "user"}, {"content", "And then what happened? Tell me more."}});
  }
}

// Never across uids: uid 4243 sending root's exact history reuses nothing (and its own second
// request does reuse its own KV).
TEST(PrefixReuse, AnotherUidsIdenticalHistoryReusesNothing) {
  DaemonProcess d(scratch_dir(), with({"--slots", "2", "--chunk-tokens", "16"}));
  ASSERT_TRUE(d.start()) << d.log();
  const auto body = history_body(kAsk);
  const Answer mine = chat(d.client(), body);
  const Answer again = chat(d.client(), body);
  ASSERT_GT(cached_of(again), 0);  // root's own KV is there, resident and in chunks
  const std::string sock = d.socket();
  const int other = wait_child(spawn_as(4243, 4243, [&] {
    client::HttpClient c(sock);
    for (int i = 0; i < 2; ++i) {
      auto r = c.request("POST", "/v1/chat/completions", body.dump());
      if (!r || r->status != 200) return 10 + i;
      const auto j = nlohmann::json::parse(r->body);
      const auto& u = j["usage"];
      const int cached = u["prompt_tokens_details"].value("cached_tokens", -1);
      if (j["choices"][0]["message"]["content"] != mine.text) return 20 + i;
      if (i == 0) {
        // Computed whole: nothing resident, loaded or restored from anyone's KV.
        if (cached != 0 || u.value("loaded_tokens", -1) != 0 || u.value("restored_tokens", -1) != 0) return 30;
      } else if (cached <= 0) {
        return 31;  // its own earlier request is reused
      }
    }
    return 0;
  }));
  EXPECT_EQ(other, 0);
}

// OpenAI's rule on every generating endpoint: cached_tokens counts tokens of prompt_tokens, and a
// session turn's prompt_tokens is every token the answer is conditioned on (its history too).
TEST(PrefixReuse, CachedTokensArePartOfPromptTokensEverywhere) {
  DaemonProcess d(scratch_dir(), with({"--slots", "1", "--chunk-tokens", "16"}));
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  auto check = [](const nlohmann::json& u, const std::string& where) {
    const int prompt = u.value("prompt_tokens", -1), cached = u["prompt_tokens_details"].value("cached_tokens", -1);
    EXPECT_GT(prompt, 0) << where << u;
    EXPECT_GE(cached, 0) << where << u;
    EXPECT_LE(cached, prompt) << where << u;
    EXPECT_LE(u.value("loaded_tokens", 0), cached) << where << u;
    EXPECT_EQ(u.value("total_tokens", -1), prompt + u.value("completion_tokens", 0)) << where << u;
  };
  auto last_usage = [](const Streamed& s) {
    for (auto it = s.events.rbegin(); it != s.events.rend(); ++it) {
      if (it->contains("usage") && (*it)["usage"].is_object()) return (*it)["usage"];
    }
    return nlohmann::json::object({{"prompt_tokens_details", nlohmann::json::object()}});
  };
  const std::string id = call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "You tell stories."}})
                             .body.value("id", "");
  ASSERT_FALSE(id.empty());
  int session_prompt = 0;
  for (int round = 0; round < 3; ++round) {
    const std::string r = std::to_string(round);
    auto completion = greedy_body(8);
    completion["prompt"] = "Once upon a time there was a cat";
    auto chat_body = history_body(kAsk, 8);
    auto turn = greedy_body(8);
    turn["content"] = "Tell me a story, part " + r + ".";
    for (bool streamed : {false, true}) {
      const std::string how = streamed ? " (stream) " : " ";
      if (streamed) {
        check(last_usage(stream(c, "/v1/completions", completion)), "completion" + how + r);
        check(last_usage(stream(c, "/v1/chat/completions", chat_body)), "chat" + how + r);
        check(last_usage(stream(c, "/v1/sessions/" + id + "/messages", turn)), "session" + how + r);
      } else {
        completion["stream"] = chat_body["stream"] = turn["stream"] = false;
        check(call(c, "POST", "/v1/completions", completion).body["usage"], "completion" + how + r);
        check(call(c, "POST", "/v1/chat/completions", chat_body).body["usage"], "chat" + how + r);
        const auto u = call(c, "POST", "/v1/sessions/" + id + "/messages", turn).body["usage"];
        check(u, "session" + how + r);
        // The history grows, and every token of it conditions the next answer.
        EXPECT_GT(u.value("prompt_tokens", 0), session_prompt) << u;
        session_prompt = u.value("prompt_tokens", 0);
      }
    }
  }
}

// Shared chunks: two sessions of one uid with the same long system prompt store its chunks once
// (the status counts the references and the bytes saved); deleting the first keeps the second's
// answers exactly what they were.
TEST(PrefixReuse, TwoSessionsWithOneLongSystemPromptStoreItOnce) {
  DaemonProcess d(scratch_dir(), with(one_slot("1024")));
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  std::string system = "You are a storyteller for children.";
  for (int i = 0; i < 6; ++i) system += " Every story has a girl named Lily, a dog named Max and a happy end.";
  auto session = [&] {
    return call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", system}}).body.value("id", "");
  };
  auto say = [&](const std::string& id, const std::string& text) {
    auto body = greedy_body(12);
    body["content"] = text;
    body["stream"] = false;
    auto r = call(c, "POST", "/v1/sessions/" + id + "/messages", body);
    EXPECT_EQ(r.status, 200u) << r.raw;
    return r.body;
  };
  // The chunk store writes back on its own thread: wait until it has written `n` and has nothing queued.
  auto written = [&](int n) {
    nlohmann::json kv;
    for (int i = 0; i < 600; ++i) {
      kv = call(c, "GET", "/v1/status").body["kv"];
      if (kv.value("write_backs", 0) >= n && kv.value("pending_write_backs", 1) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return kv;
  };
  const std::string a = session(), b = session();
  (void)say(a, "Tell me a story about the sea.");
  (void)written(1);
  const auto b1 = say(b, "Tell me a story about a cake.");
  // b's history began with a's: the system prompt's whole chunks came from a's.
  EXPECT_GT(b1["usage"].value("loaded_tokens", 0), 0) << b1;
  const auto kv = written(2);
  EXPECT_GT(kv.value("chunks_shared", 0), 0) << kv;
  EXPECT_GT(kv["ram"].value("bytes_saved", 0), 0) << kv;
  EXPECT_GT(kv["disk"].value("shared_refs", 0), 0) << kv;

  ASSERT_EQ(call(c, "DELETE", "/v1/sessions/" + a).status, 200u);
  const auto after = written(2);  // (and the drop of a's chunks, queued behind them)
  EXPECT_EQ(after["disk"].value("shared_refs", -1), 0) << after;
  (void)say(session(), "Tell me about a kite.");  // takes the only slot
  const auto b2 = say(b, "What happened next?");
  EXPECT_GT(b2["usage"].value("loaded_tokens", 0), 0) << b2;
  EXPECT_EQ(call(c, "GET", "/v1/status").body["kv"].value("bad_chunks", -1), 0);
  // The same turns in a daemon where a never existed: the same answer.
  DaemonProcess fresh(scratch_dir(), with(one_slot("1024")));
  ASSERT_TRUE(fresh.start()) << fresh.log();
  const auto fc = fresh.client();
  const std::string only = call(fc, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", system}}).body.value("id", "");
  auto fsay = [&](const std::string& text) {
    auto body = greedy_body(12);
    body["content"] = text;
    body["stream"] = false;
    return call(fc, "POST", "/v1/sessions/" + only + "/messages", body).body;
  };
  EXPECT_EQ(fsay("Tell me a story about a cake.")["message"]["content"], b1["message"]["content"]);
  EXPECT_EQ(fsay("What happened next?")["message"]["content"], b2["message"]["content"]);
}

// Prewarm: a session swapped out of the only slot is brought back before its next message, which
// then finds all of its history resident.
TEST(PrefixReuse, PrewarmBringsASessionBackBeforeItsNextMessage) {
  DaemonProcess d(scratch_dir(), with(one_slot("1024")));
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  auto session = [&] {
    return call(c, "POST", "/v1/sessions", nlohmann::json{{"system_prompt", "You tell stories."}}).body.value("id", "");
  };
  auto say = [&](const std::string& id, const std::string& text) {
    auto body = greedy_body(16);
    body["content"] = text;
    body["stream"] = false;
    return call(c, "POST", "/v1/sessions/" + id + "/messages", body);
  };
  const std::string a = session(), b = session();
  ASSERT_EQ(say(a, "Tell me a story about a dog.").status, 200u);
  ASSERT_EQ(say(b, "Tell me a story about a cat.").status, 200u);  // takes the only slot
  const auto shown = call(c, "GET", "/v1/sessions/" + a).body;
  EXPECT_FALSE(shown.value("resident", true));

  const auto warm = call(c, "POST", "/v1/sessions/" + a + "/prewarm");
  ASSERT_EQ(warm.status, 200u) << warm.raw;
  EXPECT_EQ(warm.body.value("tokens", 0), shown.value("n_tokens", -1)) << warm.raw;
  EXPECT_EQ(warm.body.value("resident_tokens", -1), 0) << warm.raw;
  EXPECT_GT(warm.body.value("loaded_tokens", 0), 0) << warm.raw;
  EXPECT_TRUE(call(c, "GET", "/v1/sessions/" + a).body.value("resident", false));
  // Prewarmed again: all of it is there already.
  const auto again = call(c, "POST", "/v1/sessions/" + a + "/prewarm");
  EXPECT_EQ(again.body.value("loaded_tokens", -1), 0) << again.raw;
  EXPECT_EQ(again.body.value("restored_tokens", -1), 0) << again.raw;

  const auto next = say(a, "What happened next?");
  ASSERT_EQ(next.status, 200u);
  // Every history token was in the slot: nothing loaded or recomputed for this turn.
  EXPECT_EQ(next.body["usage"].value("loaded_tokens", -1), 0) << next.raw;
  EXPECT_EQ(next.body["usage"].value("restored_tokens", -1), 0) << next.raw;
  EXPECT_GE(next.body["usage"]["prompt_tokens_details"].value("cached_tokens", 0), shown.value("n_tokens", 0))
      << next.raw;

  // No options; other callers cannot see the session; unknown sessions are 404.
  EXPECT_EQ(call(c, "POST", "/v1/sessions/" + a + "/prewarm", std::string(R"({"eager":true})")).status, 400u);
  EXPECT_EQ(call(c, "POST", "/v1/sessions/ses_000000000000000000000000/prewarm").status, 404u);
  const std::string sock = d.socket();
  EXPECT_EQ(wait_child(spawn_as(4244, 4244, [&] {
              client::HttpClient other(sock);
              auto r = other.request("POST", "/v1/sessions/" + a + "/prewarm", "");
              return r && r->status == 404 ? 0 : 1;
            })),
            0);
}

}  // namespace
}  // namespace llmd::test
