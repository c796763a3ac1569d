// The model's window over a conversation, as pure logic (core/context_window.h): policy names,
// when the window must move, where drop_oldest cuts, and the message that cannot fit alone.
#include "core/context_window.h"

#include <gtest/gtest.h>

namespace llmd::core {
namespace {

// A window: a system prompt whose head takes `head` tokens, then turns (user, assistant) whose
// tokens end at the given offsets; seqs from 0 (the system prompt) up.
WindowTokens window(std::size_t head, const std::vector<std::uint32_t>& ends, std::int64_t first_seq = 1) {
  WindowTokens w;
  w.head_end = head;
  w.messages.push_back({0, true, false, static_cast<std::uint32_t>(head)});
  std::int64_t seq = first_seq;
  for (std::size_t i = 0; i < ends.size(); ++i) w.messages.push_back({seq++, false, i % 2 == 0, ends[i]});
  w.n_tokens = ends.empty() ? head : ends.back();
  w.next_seq = seq;
  return w;
}

TEST(Overflow, NamesRoundTripAndUnknownOnesNameTheField) {
  for (Overflow o : {Overflow::error, Overflow::drop_oldest, Overflow::sliding}) {
    EXPECT_EQ(*parse_overflow(overflow_name(o)), o);
  }
  const auto bad = parse_overflow("truncate");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_EQ(bad.error().param(), "overflow");
  // sliding is for sessions: a stateless request asking for it is refused, naming the field.
  const auto sliding = check_stateless_overflow(Overflow::sliding, "overflow");
  ASSERT_FALSE(sliding.ok());
  EXPECT_EQ(sliding.error().code(), Errc::unsupported);
  EXPECT_EQ(sliding.error().param(), "overflow");
  EXPECT_NE(sliding.error().message().find("use a session"), std::string::npos);
  EXPECT_TRUE(check_stateless_overflow(Overflow::drop_oldest).ok());
}

TEST(Window, MovesWhenThePromptAndRoomForTheAnswerDoNotFit) {
  EXPECT_EQ(fill_target_tokens(256, 50), 128u);
  EXPECT_EQ(fill_target_tokens(256, 100), 256u);
  // Room for the answer: what it asks for, at most what the fill target leaves, at least 1.
  EXPECT_EQ(answer_room(16, 256, 128), 16u);
  EXPECT_EQ(answer_room(500, 256, 128), 128u);
  EXPECT_EQ(answer_room(16, 256, 256), 1u);
  EXPECT_FALSE(must_move(200, 40, 256, 16));
  EXPECT_TRUE(must_move(200, 41, 256, 16));
}

TEST(Window, BoundariesMustBeKnownIncreasingAndEndTheSequence) {
  EXPECT_TRUE(boundaries_known(window(10, {20, 30, 40, 50})));
  auto unknown = window(10, {20, 30, 40, 50});
  unknown.messages[2].token_end.reset();  // a row migrated from schema 1
  EXPECT_FALSE(boundaries_known(unknown));
  auto short_of_end = window(10, {20, 30, 40, 50});
  short_of_end.n_tokens = 60;  // tokens past the last message's end: not what the messages say
  EXPECT_FALSE(boundaries_known(short_of_end));
  auto backwards = window(10, {20, 30, 25, 50});
  EXPECT_FALSE(boundaries_known(backwards));
  auto before_head = window(10, {5, 30});
  EXPECT_FALSE(boundaries_known(before_head));
}

// Turns of 40 tokens (user 10, assistant 30) after a 20-token head; context 256, target 128.
TEST(Window, DropOldestKeepsTheMostRecentWholeTurnsUnderTheTarget) {
  const auto w = window(20, {30, 60, 70, 100, 110, 140, 150, 180, 190, 220});  // 5 turns, 220 tokens
  const auto plan = plan_drop(w, 30, 256, 128, "content");
  ASSERT_TRUE(plan) << plan.error().to_string();
  // head 20 + input 30 leaves 78 under the target: the last turn (40) fits, two (80) do not.
  EXPECT_EQ(plan->cut, 180u);
  EXPECT_EQ(plan->first_message, 9);  // the user message of the last turn
  EXPECT_EQ(plan->dropped_messages, 8u);
  // A target that holds everything still drops one turn (the window was asked to move).
  const auto roomy = plan_drop(w, 30, 256, 1000, "content");
  ASSERT_TRUE(roomy);
  EXPECT_EQ(roomy->cut, 60u);
  EXPECT_EQ(roomy->first_message, 3);
  EXPECT_EQ(roomy->dropped_messages, 2u);
}

TEST(Window, DropOldestKeepsNoTurnWhenNoneFitsButTheMessageDoes) {
  const auto w = window(20, {30, 60, 70, 100});
  const auto plan = plan_drop(w, 200, 256, 128, "content");
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->cut, 100u);
  EXPECT_EQ(plan->first_message, w.next_seq);
  EXPECT_EQ(plan->dropped_messages, 4u);
}

TEST(Window, AMessageThatCannotFitAloneIsRefusedNamingTheLimit) {
  const auto w = window(20, {30, 60});
  const auto plan = plan_drop(w, 236, 256, 128, "content");  // 20 + 236 + 1 > 256
  ASSERT_FALSE(plan);
  const Error& e = plan.error();
  EXPECT_EQ(e.code(), Errc::invalid_argument);
  EXPECT_EQ(e.reason(), Reason::context_length_exceeded);
  EXPECT_EQ(e.param(), "content");
  EXPECT_EQ(e.detail().limit, 256u);
  EXPECT_EQ(e.detail().actual, 256u);
  EXPECT_TRUE(plan_drop(w, 235, 256, 128, "content"));  // one token less fits
}

}  // namespace
}  // namespace llmd::core
