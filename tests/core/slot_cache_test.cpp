// SlotCache with a real model and a real chunk store: a parked generation's KV (settle with save and
// defer) stays in its slot unsaved, and is written back only when it is about to leave the slot —
// evicted, or taken by another session's job — never when its own job resumes on it, and never for
// a session that was deleted meanwhile.
#include "core/slot_cache.h"

#include <gtest/gtest.h>

#include "kvstore/chunk_store.h"
#include "tests/engine/engine_test_util.h"
#include "tests/support/test_env.h"

namespace llmd::core {
namespace {

using test::greedy;
using test::load_model;
using test::make_context;
using test::tokens_of;

class SlotCacheDeferredSave : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = load_model(test::stories_path());
    ASSERT_TRUE(model_);
    ctx_ = make_context(*model_, 3, 512);
    ASSERT_TRUE(ctx_);
    tok_ = std::make_unique<engine::Tokenizer>(*model_);
    kvstore::ChunkStoreOptions o;
    o.dir = test::scratch_dir();
    o.chunk_tokens = 16;
    o.disk_reserve = 0;
    auto store = kvstore::ChunkStore::open(std::move(o), ctx_->kv_layout(), model_->info().fingerprint);
    ASSERT_TRUE(store) << store.error().to_string();
    store_ = std::move(*store);
    slots_ = std::make_unique<SlotCache>(*ctx_, store_.get(), true);
    tokens_ = tokens_of(*tok_, "Once upon a time there was a little girl named Lily who liked to play in the park "
                               "with her big red ball and her small dog");
    ASSERT_GT(tokens_.size(), 16u);
  }

  // A job of `session` on `seq` decodes tokens_ and is parked: its KV stays, unsaved (or, with
  // parked false, it ends and its slot is an ordinary idle one).
  void park(engine::SeqId seq, const std::string& session, std::uint64_t job, bool parked = true) {
    EXPECT_EQ(slots_->reserve(seq, job, session, {}), 0u);
    slots_->occupy(seq, session, kvstore::KeyOwner{1000, false});
    engine::SequenceJob j;
    j.seq = seq;
    j.prompt = tokens_;
    j.params = greedy(1);
    (void)test::run_one(*ctx_, *tok_, std::move(j));
    slots_->settle(seq, session, tokens_, /*save=*/parked, /*defer=*/parked);
  }
  std::uint32_t stored(const std::string& session) {
    store_->flush();
    return store_->residency(session).tokens;
  }

  std::unique_ptr<engine::Model> model_;
  std::unique_ptr<engine::Context> ctx_;
  std::unique_ptr<engine::Tokenizer> tok_;
  std::unique_ptr<kvstore::ChunkStore> store_;
  std::unique_ptr<SlotCache> slots_;
  std::vector<engine::Token> tokens_;
};

TEST_F(SlotCacheDeferredSave, WrittenBackOnlyWhenTheKvLeavesItsSlot) {
  park(0, "parked", 1);
  EXPECT_EQ(stored("parked"), 0u) << "nothing is written while the KV stays";
  // Its job resumes on it: all of it is reused, nothing written.
  EXPECT_EQ(slots_->reserve(0, 1, "parked", tokens_), tokens_.size());
  slots_->settle(0, "parked", tokens_, /*save=*/true, /*defer=*/true);
  EXPECT_EQ(stored("parked"), 0u);
  // Evicted: written back first, so a later job loads it instead of recomputing it.
  ASSERT_TRUE(slots_->evict_one_idle());
  EXPECT_GE(stored("parked"), 16u);
}

TEST_F(SlotCacheDeferredSave, WrittenBackWhenAnotherSessionTakesTheSlot) {
  park(0, "first", 1);
  EXPECT_EQ(stored("first"), 0u);
  EXPECT_EQ(slots_->reserve(0, 2, "second", tokens_), 0u);  // a different key: the KV is dropped
  EXPECT_GE(stored("first"), 16u);
}

TEST_F(SlotCacheDeferredSave, AParkedGenerationsKvIsEvictedLast) {
  park(0, "parked", 1);
  park(1, "idle", 2, /*parked=*/false);  // used after the parked one, yet evicted first
  ASSERT_TRUE(slots_->evict_one_idle());
  EXPECT_EQ(slots_->cached(0).size(), tokens_.size());
  EXPECT_TRUE(slots_->cached(1).empty());
  EXPECT_NE(slots_->pick("another"), std::optional<engine::SeqId>(0)) << "a new job takes another slot first";
  ASSERT_TRUE(slots_->evict_one_idle());
  EXPECT_TRUE(slots_->cached(0).empty());
}

TEST_F(SlotCacheDeferredSave, ADeletedSessionIsNotWrittenBack) {
  park(1, "deleted", 1);
  slots_->forget("deleted");
  EXPECT_EQ(stored("deleted"), 0u);
  park(2, "rewound", 2);
  slots_->cut("rewound", 4);
  ASSERT_TRUE(slots_->evict_one_idle());
  EXPECT_EQ(stored("rewound"), 0u) << "what followed the new end was not written back";
}

}  // namespace
}  // namespace llmd::core
