// The daemon core in process: sessions, turns, residency and recompute, durability, ownership,
// busy sessions, cancellation, concurrency, shutdown.
#include "tests/core/service_harness.h"

namespace llmd::core {
namespace {

using test::ServiceHarness;

const Caller kAlice{1000, 1000, 1, false};
const Caller kBob{1001, 1001, 2, false};
const Caller kAdmin{0, 0, 3, true};

class ServiceTest : public ::testing::Test {
 protected:
  std::unique_ptr<engine::Model> model_ = test::load_model(test::stories_path());
  std::string dir_ = test::scratch_dir();
};

std::vector<std::string> three_turns(ServiceHarness& h, const std::string& id) {
  std::vector<std::string> out;
  for (const char* q : {"Tell me a story.", "What happened next?", "How did it end?"}) {
    auto o = h.turn(kAlice, ServiceHarness::message(id, q));
    EXPECT_FALSE(o.rejected) << o.rejected->to_string();
    EXPECT_TRUE(o.done && !o.done->error) << (o.done && o.done->error ? o.done->error->to_string() : "");
    out.push_back(o.done ? o.done->text : "");
  }
  return out;
}

TEST_F(ServiceTest, TurnsStreamTextAndAreSaved) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  const auto s = h.create(kAlice, "You tell stories.");
  EXPECT_EQ(s.id.rfind("ses_", 0), 0u);
  auto o = h.turn(kAlice, ServiceHarness::message(s.id, "Once upon a time"));
  ASSERT_TRUE(o.accepted);
  ASSERT_TRUE(o.done);
  EXPECT_FALSE(o.done->error);
  EXPECT_FALSE(o.done->text.empty());
  EXPECT_EQ(o.streamed, o.done->text);
  EXPECT_GT(o.done->usage.prompt_tokens, 0);
  EXPECT_GT(o.done->usage.completion_tokens, 0);

  std::optional<Result<SessionDetail>> d;
  h.service().get_session(kAlice, s.id, [&](Result<SessionDetail> r) { d = std::move(r); });
  h.run_until([&] { return d.has_value(); });
  ASSERT_TRUE(*d);
  ASSERT_EQ((*d)->messages.size(), 3u);
  EXPECT_EQ((*d)->messages[0].role, "system");
  EXPECT_EQ((*d)->messages[1].content, "Once upon a time");
  EXPECT_EQ((*d)->messages[2].role, "assistant");
  EXPECT_EQ((*d)->messages[2].content, o.done->text);
  EXPECT_GT((*d)->info.n_tokens, 0u);
  EXPECT_TRUE((*d)->info.resident);
}

// The second turn of a resident session reuses its KV; without residency it recomputes the whole
// history. Both give the same greedy answers.
TEST_F(ServiceTest, ResidentAndRecomputedSessionsAnswerIdentically) {
  ASSERT_TRUE(model_);
  std::vector<std::string> resident, recomputed;
  {
    ServiceHarness h(*model_, dir_ + "/a.db", 2, /*keep_resident=*/true);
    const auto s = h.create(kAlice);
    resident = three_turns(h, s.id);
    auto o = h.turn(kAlice, ServiceHarness::message(s.id, "And then?"));
    ASSERT_TRUE(o.done);
    EXPECT_GT(o.done->usage.cached_tokens, 0);
    EXPECT_EQ(o.done->usage.restored_tokens, 0);
  }
  {
    ServiceHarness h(*model_, dir_ + "/b.db", 2, /*keep_resident=*/false);
    const auto s = h.create(kAlice);
    recomputed = three_turns(h, s.id);
    auto o = h.turn(kAlice, ServiceHarness::message(s.id, "And then?"));
    ASSERT_TRUE(o.done);
    EXPECT_EQ(o.done->usage.cached_tokens, 0);
    EXPECT_GT(o.done->usage.restored_tokens, 0);
    EXPECT_GT(o.done->timings.restore, 0.0);
  }
  EXPECT_EQ(resident, recomputed);
}

// One slot, two sessions taking turns: each turn evicts the other session (LRU), which then
// recomputes its history, and answers exactly as a session that kept its slot.
TEST_F(ServiceTest, SessionWhoseSlotWasReusedRecomputesIdentically) {
  ASSERT_TRUE(model_);
  std::vector<std::string> alone;
  {
    ServiceHarness h(*model_, dir_ + "/alone.db", 1);
    alone = three_turns(h, h.create(kAlice).id);
  }
  ServiceHarness h(*model_, dir_ + "/shared.db", 1);
  const auto a = h.create(kAlice);
  const auto b = h.create(kAlice);
  std::vector<std::string> got;
  for (size_t i = 0; i < 3; ++i) {
    const char* q = i == 0 ? "Tell me a story." : i == 1 ? "What happened next?" : "How did it end?";
    auto oa = h.turn(kAlice, ServiceHarness::message(a.id, q));
    ASSERT_TRUE(oa.done);
    got.push_back(oa.done->text);
    if (i > 0) {
      EXPECT_GT(oa.done->usage.restored_tokens, 0) << "turn " << i << " of the evicted session";
      EXPECT_EQ(oa.done->usage.cached_tokens, 0);
    }
    ASSERT_TRUE(h.turn(kAlice, ServiceHarness::message(b.id, "Something else entirely.")).done);
  }
  EXPECT_EQ(got, alone);
}

// A session continues after the service (and its store) is torn down and rebuilt, exactly as if
// it had never stopped.
TEST_F(ServiceTest, SessionContinuesIdenticallyAfterRestart) {
  ASSERT_TRUE(model_);
  std::vector<std::string> continuous;
  {
    ServiceHarness h(*model_, dir_ + "/continuous.db");
    continuous = three_turns(h, h.create(kAlice).id);
  }
  std::string id;
  std::vector<std::string> restarted;
  {
    ServiceHarness h(*model_, dir_ + "/restarted.db");
    id = h.create(kAlice).id;
    for (const char* q : {"Tell me a story.", "What happened next?"}) {
      restarted.push_back(h.turn(kAlice, ServiceHarness::message(id, q)).done->text);
    }
  }
  {
    ServiceHarness h(*model_, dir_ + "/restarted.db");
    auto o = h.turn(kAlice, ServiceHarness::message(id, "How did it end?"));
    ASSERT_TRUE(o.done);
    EXPECT_GT(o.done->usage.restored_tokens, 0);  // its KV had to be rebuilt
    restarted.push_back(o.done->text);
  }
  EXPECT_EQ(restarted, continuous);
}

TEST_F(ServiceTest, OtherUsersCannotSeeOrTouchASession) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  const auto s = h.create(kAlice);

  std::optional<Result<SessionDetail>> d;
  h.service().get_session(kBob, s.id, [&](Result<SessionDetail> r) { d = std::move(r); });
  h.run_until([&] { return d.has_value(); });
  EXPECT_EQ(d->error().code(), Errc::not_found);

  auto o = h.turn(kBob, ServiceHarness::message(s.id, "hi"));
  ASSERT_TRUE(o.rejected);
  EXPECT_EQ(o.rejected->code(), Errc::not_found);

  std::optional<Status> del;
  h.service().delete_session(kBob, s.id, [&](Status st) { del = st; });
  h.run_until([&] { return del.has_value(); });
  EXPECT_EQ(del->error().code(), Errc::not_found);

  std::optional<Result<std::vector<SessionInfo>>> bobs, admins;
  h.service().list_sessions(kBob, [&](auto r) { bobs = std::move(r); });
  h.service().list_sessions(kAdmin, [&](auto r) { admins = std::move(r); });
  h.run_until([&] { return bobs && admins; });
  EXPECT_TRUE((*bobs)->empty());
  ASSERT_EQ((*admins)->size(), 1u);

  // The admin may manage it.
  std::optional<Status> admin_del;
  h.service().delete_session(kAdmin, s.id, [&](Status st) { admin_del = st; });
  h.run_until([&] { return admin_del.has_value(); });
  EXPECT_TRUE(*admin_del);
}

TEST_F(ServiceTest, SecondTurnOnABusySessionIsRefusedAndCancelFreesIt) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  const auto s = h.create(kAlice);
  Service::RequestId id = 0;
  auto long_turn = ServiceHarness::message(s.id, "Once upon a time", 900);
  long_turn.params.ignore_eog = true;
  auto first = h.start(kAlice, long_turn, &id);
  h.run_until([&] { return !first->streamed.empty(); });

  auto second = h.turn(kAlice, ServiceHarness::message(s.id, "hello"));
  ASSERT_TRUE(second.rejected);
  EXPECT_EQ(second.rejected->code(), Errc::busy);

  h.service().cancel(id);
  h.run_until([&] { return first->done.has_value(); });
  EXPECT_EQ(first->done->finish, engine::FinishReason::cancelled);
  EXPECT_LT(first->done->usage.completion_tokens, 900);

  // Not saved, and the session takes the next turn.
  auto third = h.turn(kAlice, ServiceHarness::message(s.id, "hello"));
  ASSERT_TRUE(third.done);
  EXPECT_FALSE(third.done->error);
  std::optional<Result<SessionDetail>> d;
  h.service().get_session(kAlice, s.id, [&](Result<SessionDetail> r) { d = std::move(r); });
  h.run_until([&] { return d.has_value(); });
  ASSERT_EQ((*d)->messages.size(), 2u);
  EXPECT_EQ((*d)->messages[0].content, "hello");
}

TEST_F(ServiceTest, ConcurrentSessionsMatchTheirSoloAnswers) {
  ASSERT_TRUE(model_);
  const std::vector<std::string> prompts = {"Tom had a dog.", "The sun was hot.", "Lily found a box.",
                                            "A bird sang.", "Ben ran fast.", "The cat slept."};
  std::vector<std::string> solo;
  {
    ServiceHarness h(*model_, dir_ + "/solo.db", 1);
    for (const auto& p : prompts) solo.push_back(h.turn(kAlice, ServiceHarness::message(h.create(kAlice).id, p)).done->text);
  }
  ServiceHarness h(*model_, dir_ + "/together.db", 4);
  std::vector<std::shared_ptr<ServiceHarness::Outcome>> outs;
  for (const auto& p : prompts) outs.push_back(h.start(kAlice, ServiceHarness::message(h.create(kAlice).id, p)));
  h.run_until([&] {
    for (const auto& o : outs) {
      if (!o->done && !o->rejected) return false;
    }
    return true;
  });
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(outs[i]->done) << i;
    EXPECT_EQ(outs[i]->done->text, solo[i]) << "prompt " << i;
  }
}

TEST_F(ServiceTest, OneOffCompletionsAndChats) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  TurnRequest c;
  c.kind = TurnRequest::Kind::completion;
  c.prompt = "Once upon a time";
  c.params = test::greedy(16);
  auto a = h.turn(kAlice, c);
  ASSERT_TRUE(a.done);
  EXPECT_EQ(a.done->usage.completion_tokens, 16);
  EXPECT_EQ(h.turn(kAlice, c).done->text, a.done->text);

  TurnRequest chat;
  chat.kind = TurnRequest::Kind::chat;
  chat.messages = {{"system", "Be kind."}, {"user", "Hi!"}};
  chat.params = test::greedy(8);
  auto b = h.turn(kBob, chat);
  ASSERT_TRUE(b.done);
  EXPECT_FALSE(b.done->text.empty());
}

TEST_F(ServiceTest, BadTurnsAreRejectedBeforeTheyStart) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  TurnRequest c;
  c.kind = TurnRequest::Kind::completion;
  c.prompt = std::string(6000, 'a');  // far more tokens than the 1024-cell context
  c.params = test::greedy(4);
  auto too_long = h.turn(kAlice, c);
  ASSERT_TRUE(too_long.rejected);
  EXPECT_EQ(too_long.rejected->code(), Errc::invalid_argument);
  EXPECT_NE(too_long.rejected->message().find("context_length_exceeded"), std::string::npos);

  c.prompt = "hi";
  c.params.max_tokens = 5000;
  EXPECT_EQ(h.turn(kAlice, c).rejected->code(), Errc::invalid_argument);
  EXPECT_EQ(h.turn(kAlice, ServiceHarness::message("ses_nope", "x")).rejected->code(), Errc::not_found);
}

TEST_F(ServiceTest, ShutdownFinishesOrCancelsWorkInFlight) {
  ASSERT_TRUE(model_);
  auto h = std::make_unique<ServiceHarness>(*model_, dir_ + "/db");
  const auto s = h->create(kAlice);
  auto long_turn = ServiceHarness::message(s.id, "Once upon a time", 900);
  long_turn.params.ignore_eog = true;
  auto o = h->start(kAlice, long_turn);
  h->run_until([&] { return o->accepted; });
  bool idle = false;
  h->service().begin_shutdown(std::chrono::milliseconds(50), [&] { idle = true; });
  h->run_until([&] { return idle; });
  ASSERT_TRUE(o->done);
  EXPECT_EQ(o->done->finish, engine::FinishReason::cancelled);
  auto late = h->turn(kAlice, ServiceHarness::message(s.id, "hi"));
  ASSERT_TRUE(late.rejected);
  EXPECT_EQ(late.rejected->code(), Errc::unavailable);
}

// A request that arrives once the shutdown drain has stopped the storage thread is answered
// (unavailable, HTTP 503), never left waiting: TaskThread::post refuses the task then, and every
// Service call that hands work to that thread answers its caller itself. Before, list, get and
// delete posted into the stopped thread and their callbacks were never called.
TEST_F(ServiceTest, RequestsAfterTheShutdownDrainAreAnswered) {
  ASSERT_TRUE(model_);
  auto h = std::make_unique<ServiceHarness>(*model_, dir_ + "/db");
  const auto s = h->create(kAlice);
  bool idle = false;
  h->service().begin_shutdown(std::chrono::milliseconds(0), [&] { idle = true; });
  h->run_until([&] { return idle; });  // nothing in flight: the storage thread has stopped

  std::optional<Result<std::vector<SessionInfo>>> list;
  std::optional<Result<SessionDetail>> get;
  std::optional<Status> del;
  std::optional<Result<SessionInfo>> create;
  std::optional<Result<kvstore::AuditReport>> audit;
  h->service().list_sessions(kAlice, [&](Result<std::vector<SessionInfo>> r) { list = std::move(r); });
  h->service().get_session(kAlice, s.id, [&](Result<SessionDetail> r) { get = std::move(r); });
  h->service().delete_session(kAlice, s.id, [&](Status r) { del = std::move(r); });
  h->service().create_session(kAlice, std::nullopt, "", [&](Result<SessionInfo> r) { create = std::move(r); });
  h->service().audit_session(kAlice, s.id, [&](Result<kvstore::AuditReport> r) { audit = std::move(r); });
  auto turn = h->start(kAlice, ServiceHarness::message(s.id, "hi"));
  h->run_until([&] { return list && get && del && create && audit && (turn->rejected || turn->done); },
               std::chrono::seconds(10));
  for (const Error* e : std::initializer_list<const Error*>{list && !*list ? &list->error() : nullptr, get && !*get ? &get->error() : nullptr,
                         del && !*del ? &del->error() : nullptr, create && !*create ? &create->error() : nullptr,
                         audit && !*audit ? &audit->error() : nullptr, turn->rejected ? &*turn->rejected : nullptr}) {
    ASSERT_NE(e, nullptr) << "a call was not answered, or answered without an error";
    EXPECT_EQ(e->code(), Errc::unavailable) << e->to_string();
  }
  // The session is not left busy by the refused delete.
  EXPECT_EQ(h->service().session_owner(s.id), kAlice.uid);
  EXPECT_EQ(h->service().counts().in_flight, 0u);
}

// Health and the D-Bus ActiveSessions property read counts(): the io thread's own counters.
TEST_F(ServiceTest, CountsFollowTurnsInFlight) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  const auto s = h.create(kAlice);
  EXPECT_EQ(h.service().counts().sessions, 1u);
  EXPECT_EQ(h.service().counts().in_flight, 0u);
  auto o = h.start(kAlice, ServiceHarness::message(s.id, "Once upon a time", 8));
  EXPECT_EQ(h.service().counts().in_flight, 1u);
  EXPECT_EQ(h.service().status().in_flight, 1u);
  h.run_until([&] { return o->done.has_value() || o->rejected.has_value(); });
  EXPECT_EQ(h.service().counts().in_flight, 0u);
  EXPECT_FALSE(h.service().counts().shutting_down);
}

// The context check carries its reason and numbers, set where it is born (not parsed from text).
TEST_F(ServiceTest, ContextLengthExceededCarriesItsLimit) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  TurnRequest req;
  req.kind = TurnRequest::Kind::completion;
  req.prompt = std::string(6000, 'a');  // far more tokens than the 1024-cell context
  req.params = test::greedy(4);
  auto o = h.turn(kAlice, req);
  ASSERT_TRUE(o.rejected);
  EXPECT_EQ(o.rejected->code(), Errc::invalid_argument);
  EXPECT_EQ(o.rejected->reason(), Reason::context_length_exceeded);
  EXPECT_EQ(o.rejected->param(), "prompt");
  EXPECT_EQ(o.rejected->detail().limit, h.service().max_session_tokens());
  ASSERT_TRUE(o.rejected->detail().actual);
  EXPECT_GE(*o.rejected->detail().actual, h.service().max_session_tokens());
  EXPECT_EQ(o.rejected->message().rfind("context_length_exceeded: the prompt has ", 0), 0u) << o.rejected->message();
}

// A turn numbered ahead (TurnRequest::expect_messages, as /v1/responses numbers its ids) runs only
// on the session it was numbered for: once another turn came in between, it is refused (busy)
// before anything runs, and nothing is saved.
TEST_F(ServiceTest, ATurnNumberedAheadIsRefusedOnceTheSessionMovedOn) {
  ASSERT_TRUE(model_);
  ServiceHarness h(*model_, dir_ + "/db");
  const auto s = h.create(kAlice, "You tell stories.");  // 1 message: the system prompt
  auto numbered = ServiceHarness::message(s.id, "Once upon a time");
  numbered.expect_messages = 1;
  auto first = h.turn(kAlice, numbered);
  ASSERT_TRUE(first.done) << (first.rejected ? first.rejected->to_string() : "");
  EXPECT_FALSE(first.done->error);
  // Numbered for 1 message again, but the session now holds 3.
  auto stale = h.turn(kAlice, numbered);
  ASSERT_TRUE(stale.rejected);
  EXPECT_EQ(stale.rejected->code(), Errc::busy);
  EXPECT_FALSE(stale.accepted);
  numbered.expect_messages = 3;
  auto next = h.turn(kAlice, numbered);
  ASSERT_TRUE(next.done) << (next.rejected ? next.rejected->to_string() : "");
  std::optional<Result<SessionDetail>> d;
  h.service().get_session(kAlice, s.id, [&](Result<SessionDetail> r) { d = std::move(r); });
  h.run_until([&] { return d.has_value(); });
  ASSERT_TRUE(*d);
  EXPECT_EQ((*d)->messages.size(), 5u);
}

}  // namespace
}  // namespace llmd::core
