// The fair scheduler end to end, with the real llmd and real kernel credentials: clients of
// different uids (forked children that drop privileges) share the model as the policy says;
// preempted generations resume with exactly the output they have uninterrupted; per-uid limits
// answer 429 naming the limit.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include "tests/e2e/e2e_util.h"

namespace llmd::test {
namespace {

std::map<std::string, nlohmann::json> clients_of(const DaemonProcess& d) {
  std::map<std::string, nlohmann::json> out;
  const auto st = call(d.client(), "GET", "/v1/status");
  for (const auto& c : st.body["scheduler"]["clients"]) out[c["client"].get<std::string>()] = c;
  return out;
}

// Four uids, asymmetric load: 4301 keeps four long generations in flight, the others two short
// ones each (so they are always backlogged: the policy, not their own pace, decides their share);
// 4304 has weight 2. With slots for two, the scheduler decides who runs.
// Returns the clients' largest and smallest counter (service / weight) once every client has been
// served for a while, with all of them still backlogged.
struct Spread {
  double max_counter = 0, min_counter = 0;
  std::map<std::string, double> service;
  std::uint64_t preemptions = 0;
};

Spread run_four_uids(const std::string& policy) {
  DaemonOptions o;
  o.args = {"--slots", "2", "--scheduler", policy, "--preempt-gap", "256", "--weight", "4304=2", "--flash-attn", "off"};
  DaemonProcess d(scratch_dir(), o);
  EXPECT_TRUE(d.start()) << d.log();
  const std::string sock = d.socket();
  std::vector<pid_t> children;
  for (uid_t uid : {4301u, 4302u, 4303u, 4304u}) {
    const int depth = uid == 4301 ? 4 : 2;
    const int tokens = uid == 4301 ? 120 : 12;
    children.push_back(spawn_completion_loop(sock, uid, depth, [=](int t) {
      return completion(tokens, "Once upon a time " + std::to_string(t));
    }));
  }
  // Wait until every client has been served, then long enough for the heavy one to pull ahead
  // under FIFO; snapshot while all four are still backlogged.
  Spread s;
  for (int polls = 0; polls < 6000; ++polls) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const auto clients = clients_of(d);
    if (clients.size() < 4) continue;
    double total = 0;
    bool everyone = true;
    for (const auto& [id, c] : clients) {
      total += c["service"].get<double>();
      everyone = everyone && c["output_tokens"].get<std::uint64_t>() > 0;
    }
    if (!everyone || total < 30000) continue;
    s.max_counter = 0;
    s.min_counter = 1e300;
    for (const auto& [id, c] : clients) {
      s.max_counter = std::max(s.max_counter, c["counter"].get<double>());
      s.min_counter = std::min(s.min_counter, c["counter"].get<double>());
      s.service[id] = c["service"].get<double>();
    }
    s.preemptions = call(d.client(), "GET", "/v1/status").body["scheduler"]["preemptions"].get<std::uint64_t>();
    break;
  }
  std::printf("%s: counters %.0f..%.0f, preemptions %llu, service:", policy.c_str(), s.min_counter, s.max_counter,
              static_cast<unsigned long long>(s.preemptions));
  for (const auto& [id, v] : s.service) std::printf(" %s=%.0f", id.c_str(), v);
  std::printf("\n");
  d.stop(SIGTERM);
  for (pid_t pid : children) EXPECT_EQ(wait_child(pid), 0);
  EXPECT_EQ(s.service.size(), 4u) << "the clients were never all served";
  return s;
}

TEST(SchedulerE2E, FourUidsShareByCountersFairAndNotFifo) {
  // The bound: one request's worth of charges either way (prompt ~10 + 2 x 120 generated), the
  // preemption gap, and the lead one admission round can give: well under the FIFO drift.
  constexpr double kBound = 256 + 2 * (10 + 2 * 120);
  Spread fair = run_four_uids("fair");
  EXPECT_LE(fair.max_counter - fair.min_counter, kBound)
      << "heavy 4301: " << fair.service["4301"] << ", light 4302: " << fair.service["4302"]
      << ", weight-2 4304: " << fair.service["4304"];
  // Weight 2 gets twice the service of a weight-1 client.
  EXPECT_NEAR(fair.service["4304"] / fair.service["4302"], 2.0, 0.25);
  Spread fifo = run_four_uids("fifo");
  EXPECT_GT(fifo.max_counter - fifo.min_counter, kBound) << "FIFO kept the clients even: the test shows nothing";
  EXPECT_GT(fifo.service["4301"], fair.service["4301"] * 1.2) << "FIFO should serve the heavy client more";
}

// A long generation is preempted again and again by another client's short requests (one slot,
// a small preemption gap), and ends with exactly the text it gives alone: sessions (KV through the
// chunk store, or recomputed) and one-off completions (replayed). With one slot the preempted KV
// leaves it (written back as it goes); with spare slots ("+resident") it stays and the generation
// resumes on it.
class SchedulerPreemption : public ::testing::TestWithParam<std::string> {};

TEST_P(SchedulerPreemption, PreemptedGenerationsResumeIdentically) {
  const std::string param = GetParam();
  const bool resident = param.ends_with("+resident");
  DaemonOptions o;
  o.args = {"--preempt-gap", "40", "--flash-attn", "off", "--restore", param.substr(0, param.find('+'))};
  if (resident) {
    o.args.insert(o.args.end(), {"--parallel", "1", "--slots", "8"});
  } else {
    o.args.insert(o.args.end(), {"--slots", "1"});
  }
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();
  auto session = [&] {
    auto r = call(c, "POST", "/v1/sessions", nlohmann::json{{"app", "long"}, {"system_prompt", "Tell a story."}});
    EXPECT_EQ(r.status, 201u) << r.raw;
    return r.body["id"].get<std::string>();
  };
  nlohmann::json turn = greedy_body(300);
  turn["content"] = "Once upon a time there was a little dog.";
  turn["ignore_eos"] = true;
  turn["stream"] = false;
  nlohmann::json one_off = completion(300, "The little girl went to the park and");
  one_off["app"] = "long";

  // Alone.
  const std::string s1 = session();
  const auto alone_turn = call(c, "POST", "/v1/sessions/" + s1 + "/messages", turn);
  ASSERT_EQ(alone_turn.status, 200u) << alone_turn.raw;
  const auto alone_one_off = call(c, "POST", "/v1/completions", one_off);
  ASSERT_EQ(alone_one_off.status, 200u) << alone_one_off.raw;
  const auto before = call(c, "GET", "/v1/status").body["scheduler"]["preemptions"].get<std::uint64_t>();

  // Under pressure: another client floods short requests while they run.
  std::atomic<bool> stop{false};
  std::vector<std::thread> flood;
  for (int t = 0; t < 2; ++t) {
    flood.emplace_back([&, t] {
      auto fc = d.client();
      nlohmann::json b = completion(6, "Tom " + std::to_string(t));
      b["app"] = "flood";
      while (!stop) {
        auto r = call(fc, "POST", "/v1/completions", b);
        if (r.status != 200) break;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string s2 = session();
  const auto busy_turn = call(c, "POST", "/v1/sessions/" + s2 + "/messages", turn);
  const auto busy_one_off = call(c, "POST", "/v1/completions", one_off);
  stop = true;
  for (auto& t : flood) t.join();

  ASSERT_EQ(busy_turn.status, 200u) << busy_turn.raw;
  ASSERT_EQ(busy_one_off.status, 200u) << busy_one_off.raw;
  const auto after = call(c, "GET", "/v1/status").body["scheduler"];
  EXPECT_GE(after["preemptions"].get<std::uint64_t>(), before + 2) << "the long generations were not preempted";
  // Each one is charged to the client whose generation gave way (root sees every client).
  std::uint64_t charged = 0;
  for (const auto& cl : after["clients"]) charged += cl["preempted"].get<std::uint64_t>();
  EXPECT_EQ(charged, after["preemptions"].get<std::uint64_t>()) << after.dump();
  EXPECT_EQ(busy_turn.body["message"]["content"], alone_turn.body["message"]["content"]);
  EXPECT_EQ(busy_one_off.body["choices"][0]["text"], alone_one_off.body["choices"][0]["text"]);
  EXPECT_EQ(busy_turn.body["usage"]["completion_tokens"], 300);
  std::printf("%s: busy turn usage %s, one-off usage %s\n", param.c_str(), busy_turn.body["usage"].dump().c_str(),
              busy_one_off.body["usage"].dump().c_str());
  if (resident) {
    // Most of what the preempted generations had was still in their slots when they resumed
    // (with one slot, a turn loads or recomputes all of it again at every resume).
    for (const auto* r : {&busy_turn, &busy_one_off}) {
      const auto& u = r->body["usage"];
      EXPECT_LT(u["loaded_tokens"].get<int>() + u["restored_tokens"].get<int>(), u["total_tokens"].get<int>() / 2)
          << u.dump();
    }
    // The app is charged for what was loaded for it once, not again at every resume on resident KV
    // (a bug the fair bench found: each resume billed the job's first load again).
    std::uint64_t loaded = 0;
    for (const auto* r : {&alone_turn, &alone_one_off, &busy_turn, &busy_one_off}) {
      loaded += r->body["usage"]["loaded_tokens"].get<std::uint64_t>();
    }
    for (const auto& cl : after["clients"]) {
      if (cl["app"] == "long") {
        EXPECT_EQ(cl["swap_tokens"].get<std::uint64_t>(), loaded) << cl.dump();
      }
    }
  }
  // The preempted session continues normally afterwards, like the one never preempted.
  nlohmann::json next = greedy_body(20);
  next["content"] = "And then?";
  next["stream"] = false;
  const auto n1 = call(c, "POST", "/v1/sessions/" + s1 + "/messages", next);
  const auto n2 = call(c, "POST", "/v1/sessions/" + s2 + "/messages", next);
  ASSERT_EQ(n2.status, 200u) << n2.raw;
  EXPECT_EQ(n1.body["message"]["content"], n2.body["message"]["content"]);
  EXPECT_TRUE(d.log().find("ERROR") == std::string::npos) << d.log();
}

INSTANTIATE_TEST_SUITE_P(Restore, SchedulerPreemption,
                         ::testing::Values("chunks", "recompute", "chunks+resident", "recompute+resident"));

TEST(SchedulerLimits, OverALimitIs429NamingIt) {
  DaemonOptions o;
  o.args = {"--slots", "1", "--max-queued-per-client", "1", "--max-prompt-tokens", "40", "--max-sessions-per-user", "2"};
  DaemonProcess d(scratch_dir(), o);
  ASSERT_TRUE(d.start()) << d.log();
  const auto c = d.client();

  // A prompt over max-prompt-tokens: 429, Retry-After, the limit named.
  std::string long_prompt;
  for (int i = 0; i < 30; ++i) long_prompt += "Once upon a time ";
  const std::string request = completion(4, long_prompt).dump();
  const auto raw = raw_exchange(d.socket(), "POST /v1/completions HTTP/1.1\r\nHost: llmd\r\nContent-Type: "
                                            "application/json\r\nContent-Length: " + std::to_string(request.size()) +
                                            "\r\nConnection: close\r\n\r\n" + request);
  EXPECT_EQ(raw.rfind("HTTP/1.1 429", 0), 0u) << raw;
  EXPECT_NE(raw.find("Retry-After:"), std::string::npos) << raw;
  const auto body = nlohmann::json::parse(raw.substr(raw.find("\r\n\r\n") + 4), nullptr, false);
  ASSERT_TRUE(body.is_object()) << raw;
  EXPECT_EQ(body["error"]["code"], "limit_exceeded");
  EXPECT_EQ(body["error"]["param"], "max-prompt-tokens");

  // Queued requests: one slot + one queued per uid; a third is refused, another uid is not.
  std::vector<std::thread> long_ones;
  std::atomic<int> done_ok{0};
  for (int i = 0; i < 2; ++i) {
    long_ones.emplace_back([&] {
      if (call(c, "POST", "/v1/completions", completion(600, "Tom and Sue")).status == 200) ++done_ok;
    });
  }
  for (int i = 0; i < 500; ++i) {
    const auto q = call(c, "GET", "/v1/status").body["queue"];
    if (q["in_flight"].get<int>() == 2 && q["running"].get<int>() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto third = call(c, "POST", "/v1/completions", completion(4, "Hi"));
  EXPECT_EQ(third.status, 429u) << third.raw;
  EXPECT_EQ(third.body["error"]["param"], "max-queued-per-client") << third.raw;
  const std::string sock = d.socket();
  const pid_t other = spawn_as(4401, 4401, [&] {
    client::HttpClient oc(sock);
    auto r = oc.request("POST", "/v1/completions", completion(4, "Hi").dump());
    return r && r->status == 200 ? 0 : 1;
  });
  EXPECT_EQ(wait_child(other), 0) << "another uid is not limited by root's queue";
  for (auto& t : long_ones) t.join();
  EXPECT_EQ(done_ok.load(), 2);

  // Stored sessions.
  EXPECT_EQ(call(c, "POST", "/v1/sessions", std::string("{}")).status, 201u);
  EXPECT_EQ(call(c, "POST", "/v1/sessions", std::string("{}")).status, 201u);
  const auto over = call(c, "POST", "/v1/sessions", std::string("{}"));
  EXPECT_EQ(over.status, 429u);
  EXPECT_EQ(over.body["error"]["param"], "max-sessions-per-user") << over.raw;

  // Bad scheduling fields are clear errors.
  auto bad = completion(4, "Hi");
  bad["priority"] = "urgent";
  EXPECT_EQ(call(c, "POST", "/v1/completions", bad).status, 400u);
  bad = completion(4, "Hi");
  bad["app"] = "no spaces allowed";
  EXPECT_EQ(call(c, "POST", "/v1/completions", bad).status, 400u);
  auto background = completion(4, "Hi");
  background["priority"] = "background";
  background["app"] = "batch-job";
  EXPECT_EQ(call(c, "POST", "/v1/completions", background).status, 200u);
  EXPECT_EQ(clients_of(d).count("0/batch-job"), 1u);
}

}  // namespace
}  // namespace llmd::test

namespace llmd::test {
namespace {

TEST(SchedulerConfig, BadSchedulerSettingsAreRefusedNamingTheKey) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--scheduler", "lottery"}, "scheduler"},
      {{"--weight", "alice"}, "weight"},
      {{"--weight", "alice=0"}, "weight"},
      {{"--weight", "alice=two"}, "weight"},
      {{"--weight", "al ice=2"}, "weight"},
      {{"--weight", "alice/my app=2"}, "weight"},
      {{"--preempt-gap", "-1"}, "preempt-gap"},
      {{"--parallel", "8", "--slots", "8", "--batch", "4"}, "batch"},
      {{"--max-queued-per-client", "0"}, "max-queued-per-client"},
      {{"--max-stored-mib-per-user", "0"}, "max-stored-mib-per-user"},
  };
  expect_refused_naming_the_key(cases);
  // Good ones pass, and are shown.
  const auto ok = run_program({llmd_binary(), "--config", "/dev/null", "--model", stories_path(), "--scheduler", "fifo",
                               "--weight", "root=2", "--weight", "1000/editor=0.5", "--check-config"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("weight = 1000/editor=0.5"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("scheduler = fifo"), std::string::npos) << ok.out;
}

}  // namespace
}  // namespace llmd::test
