// Chunks of real llama.cpp KV state: a sequence cut into 16-cell chunks, encoded, decoded and
// restored into another slot continues bit-identically with the exact codecs; lossy chunks
// restore and keep generating. And the chunk store's write-back bound with a real model: a
// session whose write-back was dropped restores nothing, is recomputed, and continues exactly as
// the session whose write-back was kept and as the uninterrupted run.
#include <algorithm>
#include <cmath>

#include "kvstore/chunk.h"
#include "kvstore/chunk_store.h"
#include "tests/engine/engine_test_util.h"
#include "tests/kvstore/chunk_store_util.h"
#include "tests/support/test_env.h"

namespace llmd::kvstore {
namespace {

using engine::FlashAttn;

std::vector<float> values_of(const engine::KvRows& r);

// Restored KV of a chunk-native codec against the original, each 16-cell chunk and layer: every
// value within half a quantization step of the chunk's range of that layer's K or V (a channel's
// or a group's range is within it), plus the f16 rounding of the restored value.
void expect_within_step(const engine::KvStream& got, const engine::KvStream& want, int bits) {
  ASSERT_EQ(got.cells.size(), want.cells.size());
  for (std::size_t l = 0; l < want.k.size(); ++l) {
    for (auto side : {&engine::KvStream::k, &engine::KvStream::v}) {
      const auto a = values_of((got.*side)[l]), b = values_of((want.*side)[l]);
      ASSERT_EQ(a.size(), b.size());
      const std::size_t per_chunk = b.size() / want.cells.size() * 16;
      for (std::size_t c0 = 0; c0 < b.size(); c0 += per_chunk) {
        const std::size_t c1 = std::min(b.size(), c0 + per_chunk);
        const auto [lo, hi] = std::minmax_element(b.begin() + static_cast<std::ptrdiff_t>(c0),
                                                  b.begin() + static_cast<std::ptrdiff_t>(c1));
        const float half_step = (*hi - *lo) / static_cast<float>((1 << bits) - 1) / 2 * 1.01f;
        for (std::size_t i = c0; i < c1; ++i) {
          ASSERT_LE(std::abs(a[i] - b[i]), half_step + std::abs(b[i]) / 1024 + 1e-6f)
              << "layer " << l << " value " << i << " bits " << bits;
        }
      }
    }
  }
}

class ChunkRestore : public ::testing::TestWithParam<std::pair<std::string, FlashAttn>> {};

TEST_P(ChunkRestore, ChunksRestoreASequence) {
  const auto& [which, fa] = GetParam();
  auto model = test::load_model(which == "stories260K" ? test::stories_path() : test::generated_model(which));
  ASSERT_TRUE(model);
  engine::Tokenizer tok(*model);
  auto ctx = test::make_context(*model, 4, 1024, fa);
  ASSERT_TRUE(ctx);
  const auto prompt = test::tokens_of(tok, "Once upon a time, there was a little dog who liked to run in the park");
  const auto whole = test::run_one(*ctx, tok, {0, prompt, test::greedy(48)});
  ctx->clear_all();
  const auto first = test::run_one(*ctx, tok, {0, prompt, test::greedy(24)});

  auto bytes = ctx->seq_state_get(0);
  ASSERT_TRUE(bytes);
  auto st = engine::parse_seq_state(*bytes, ctx->seq_state_format());
  ASSERT_TRUE(st);
  const int stream = st->active_stream();
  const auto& cells = st->streams[static_cast<std::size_t>(stream)];
  const auto& layout = ctx->kv_layout();

  for (Codec codec : kAllCodecs) {
    std::vector<std::vector<std::uint8_t>> blobs;
    std::size_t encoded_bytes = 0;
    for (std::size_t b = 0; b < cells.cells.size(); b += 16) {
      auto part = engine::slice_cells(cells, b, std::min(b + 16, cells.cells.size()));
      ASSERT_TRUE(part);
      auto blob = encode_chunk(*part, layout, codec);
      ASSERT_TRUE(blob) << blob.error().to_string();
      encoded_bytes += blob->size();
      blobs.push_back(std::move(*blob));
    }
    // Decoded as the daemon restores (straight into the state for slot 2), then installed through
    // the validating seq_state_set: the built bytes are well-formed llama.cpp state.
    std::vector<std::uint8_t> buffer, scratch;
    engine::SeqStateWriter out(buffer, layout, 2, ctx->n_stream(), ctx->stream_of(2), cells.cells.size());
    std::size_t at = 0;
    for (const auto& blob : blobs) {
      auto info = decode_chunk_into(blob, layout, out, at, scratch);
      ASSERT_TRUE(info) << info.error().to_string();
      at += info->n_cells;
    }
    ASSERT_EQ(at, cells.cells.size());
    ctx->seq_clear(2);
    ASSERT_TRUE(ctx->seq_state_set(2, out.bytes())) << codec_name(codec);
    ASSERT_EQ(ctx->seq_pos_max(2), ctx->seq_pos_max(0));
    const auto rest = test::run_one(*ctx, tok, {2, {first.tokens.back()}, test::greedy(24)});
    if (codec == Codec::exact || codec == Codec::exact_zstd) {
      std::vector<engine::Token> joined = first.tokens;
      joined.insert(joined.end(), rest.tokens.begin(), rest.tokens.end());
      EXPECT_EQ(joined, whole.tokens) << codec_name(codec);
    } else {
      EXPECT_EQ(rest.tokens.size(), 24u) << codec_name(codec);  // lossy KV still generates
      EXPECT_LT(encoded_bytes, bytes->size()) << codec_name(codec);
      if (codec == Codec::kivi8 || codec == Codec::kivi4 || codec == Codec::kivi2) {
        auto built = engine::parse_seq_state(out.bytes(), ctx->seq_state_format());
        ASSERT_TRUE(built) << built.error().to_string();
        expect_within_step(built->streams[static_cast<std::size_t>(built->active_stream())], cells,
                           codec == Codec::kivi8 ? 8 : codec == Codec::kivi4 ? 4 : 2);
      }
    }
    ctx->seq_clear(2);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ChunkRestore,
                         ::testing::Values(std::make_pair(std::string("stories260K"), FlashAttn::automatic),
                                           std::make_pair(std::string("stories260K"), FlashAttn::off),
                                           std::make_pair(std::string("tiny-f16"), FlashAttn::on)),
                         [](const auto& p) {
                           return test::param_name(p.param.first) +
                                  (p.param.second == FlashAttn::off ? "_fa_off" : p.param.second == FlashAttn::on ? "_fa_on" : "_fa_auto");
                         });

// The KV cells [0, n) of a sequence state, by position.
engine::KvStream cells_of(std::span<const std::uint8_t> state, const engine::Context& ctx, std::size_t n) {
  auto st = engine::parse_seq_state(state, ctx.seq_state_format());
  EXPECT_TRUE(st) << st.error().to_string();
  if (!st || st->active_stream() < 0) return {};
  engine::KvStream cells = st->streams[static_cast<std::size_t>(st->active_stream())];
  engine::sort_cells_by_position(cells);
  auto first = engine::slice_cells(cells, 0, n);
  EXPECT_TRUE(first) << first.error().to_string();
  return first ? *first : engine::KvStream{};
}

std::vector<float> values_of(const engine::KvRows& r) {
  const auto f32 = *engine::ggml_type_from_name("f32");
  const auto per_row = engine::ggml_row_elements(r.type, r.row_bytes);
  EXPECT_TRUE(per_row);
  if (!per_row || r.row_bytes == 0) return {};
  const std::int64_t rows = static_cast<std::int64_t>(r.data.size() / r.row_bytes);
  std::vector<float> out(static_cast<std::size_t>(rows * *per_row));
  EXPECT_TRUE(engine::convert_rows(r.type, r.data.data(), f32, out.data(), rows, *per_row));
  return out;
}

// The same KV up to the rounding of another batch split (a recompute decodes the history in one
// batch where the turn decoded its generated tokens one by one): every value within two f16 steps
// of its magnitude (at least 1), i.e. 1/512 of it.
void expect_same_kv(const engine::KvStream& got, const engine::KvStream& want) {
  ASSERT_EQ(got.cells.size(), want.cells.size());
  ASSERT_EQ(got.k.size(), want.k.size());
  float worst = 0;  // the largest difference, relative to the value's magnitude (at least 1)
  for (std::size_t l = 0; l < got.k.size(); ++l) {
    for (auto side : {&engine::KvStream::k, &engine::KvStream::v}) {
      const auto a = values_of((got.*side)[l]), b = values_of((want.*side)[l]);
      ASSERT_EQ(a.size(), b.size());
      ASSERT_FALSE(a.empty());
      for (std::size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1.0f));
      }
    }
  }
  EXPECT_LE(worst, 1.0f / 512);
}

TEST(WriteBackBound, ADroppedSessionIsRecomputedToTheSameKvAndIdenticalOutput) {
  auto model = test::load_model(test::stories_path());
  ASSERT_TRUE(model);
  engine::Tokenizer tok(*model);
  auto ctx = test::make_context(*model, 4, 1024);
  ASSERT_TRUE(ctx);
  const auto prompt = test::tokens_of(tok, "Once upon a time, there was a little dog who liked to run in the park");
  const auto whole = test::run_one(*ctx, tok, {0, prompt, test::greedy(48)});
  ctx->clear_all();
  // A turn: the KV holds the prompt and the generated tokens but the last.
  const auto first = test::run_one(*ctx, tok, {0, prompt, test::greedy(24)});
  std::vector<engine::Token> history = prompt;
  history.insert(history.end(), first.tokens.begin(), first.tokens.end() - 1);
  ASSERT_EQ(static_cast<std::size_t>(ctx->seq_pos_max(0) + 1), history.size());
  auto state = ctx->seq_state_get(0);
  ASSERT_TRUE(state);

  // Three sessions with this KV written back while the store's thread is held inside the first,
  // under a bound of one write-back: the second (not in use) is dropped for the third.
  auto gate = std::make_shared<test_util::GateFs>();
  ChunkStoreOptions o;
  o.dir = test::scratch_dir();
  o.chunk_tokens = 16;
  o.disk_reserve = 0;
  o.fs = gate;
  o.write_back_queue_bytes = state->size() + history.size() * sizeof(engine::Token);
  auto opened = ChunkStore::open(o, ctx->kv_layout(), model->info().fingerprint);
  ASSERT_TRUE(opened) << opened.error().to_string();
  ChunkStore& store = **opened;
  store.write_back("ses_first", history, *state);
  gate->wait_entered();
  store.write_back("ses_dropped", history, *state);
  store.write_back("ses_kept", history, *state);
  EXPECT_EQ(store.stats().writebacks_dropped, 1u);
  EXPECT_LE(store.stats().pending_bytes, o.write_back_queue_bytes);
  gate->open();
  store.flush();

  const std::vector<engine::Token> last{first.tokens.back()};
  auto continued = [&](const std::vector<engine::Token>& rest) {
    std::vector<engine::Token> all = first.tokens;
    all.insert(all.end(), rest.begin(), rest.end());
    return all;
  };
  // The kept session restores every position from its chunks and continues as the whole run.
  std::vector<std::uint8_t> buffer;
  const LoadResult kept = store.load("ses_kept", history, {2, ctx->n_stream(), ctx->stream_of(2)}, buffer);
  ASSERT_EQ(kept.tokens, history.size());
  ctx->seq_clear(2);
  ASSERT_TRUE(ctx->seq_state_set(2, std::span(buffer.data(), kept.state_bytes)));
  EXPECT_EQ(continued(test::run_one(*ctx, tok, {2, last, test::greedy(24)}).tokens), whole.tokens);

  // The dropped one has nothing stored: its history is recomputed from its tokens, to the same KV,
  // and it continues the same.
  const LoadResult dropped = store.load("ses_dropped", history, {3, ctx->n_stream(), ctx->stream_of(3)}, buffer);
  EXPECT_EQ(dropped.tokens, 0u);
  ctx->seq_clear(3);
  std::vector<engine::Token> replay = history;
  replay.push_back(first.tokens.back());
  const auto recomputed = test::run_one(*ctx, tok, {3, replay, test::greedy(24)});
  EXPECT_EQ(continued(recomputed.tokens), whole.tokens);
  auto state3 = ctx->seq_state_get(3);
  ASSERT_TRUE(state3);
  expect_same_kv(cells_of(*state3, *ctx, history.size()), cells_of(*state, *ctx, history.size()));
}

}  // namespace
}  // namespace llmd::kvstore
