// Chat prompts: the model's own template where it has one, the documented fallback where not.
#include "engine/chat_template.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::engine {
namespace {

const std::vector<ChatMessage> kChat = {{"system", "Be brief."}, {"user", "Hello?"}};

TEST(ChatTemplate, ModelWithoutTemplateUsesTheFallback) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  auto p = apply_chat_template(*m, kChat, true);
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_TRUE(p->fallback);
  EXPECT_EQ(p->template_name, kFallbackChatTemplate);
  EXPECT_EQ(p->text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n"
                     "<|im_start|>assistant\n");
}

TEST(ChatTemplate, ModelTemplateIsUsedWhenPresent) {
  auto m = test::load_model(test::generated_model("smollm2-135m-q8_0"));
  ASSERT_TRUE(m);
  ASSERT_TRUE(m->info().has_chat_template);
  auto p = apply_chat_template(*m, kChat, false);
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->fallback);
  EXPECT_EQ(p->template_name, "model");
  EXPECT_NE(p->text.find("<|im_start|>user\nHello?<|im_end|>"), std::string::npos);
  EXPECT_EQ(p->text.find("assistant"), std::string::npos);  // no assistant turn opened
}

TEST(ChatTemplate, BadMessagesAreRefused) {
  auto m = test::load_model(test::stories_path());
  ASSERT_TRUE(m);
  EXPECT_EQ(apply_chat_template(*m, {}, true).error().code(), Errc::invalid_argument);
  const std::vector<ChatMessage> no_role = {{"", "x"}};
  EXPECT_EQ(apply_chat_template(*m, no_role, true).error().code(), Errc::invalid_argument);
  const std::vector<ChatMessage> bad_utf8 = {{"user", "\xC3"}};
  EXPECT_EQ(apply_chat_template(*m, bad_utf8, true).error().code(), Errc::invalid_argument);
  const std::vector<ChatMessage> nul = {{"user", std::string("a\0b", 3)}};
  EXPECT_EQ(apply_chat_template(*m, nul, true).error().code(), Errc::invalid_argument);
  const std::vector<ChatMessage> many(kMaxChatMessages + 1, ChatMessage{"user", "x"});
  EXPECT_EQ(apply_chat_template(*m, many, true).error().code(), Errc::invalid_argument);
}

}  // namespace
}  // namespace llmd::engine
