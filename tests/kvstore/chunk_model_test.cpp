// Chunks of real llama.cpp KV state: a sequence cut into 16-cell chunks, encoded, decoded and
// restored into another slot continues bit-identically with the exact codecs; lossy chunks
// restore and keep generating.
#include "kvstore/chunk.h"
#include "tests/engine/engine_test_util.h"

namespace llmd::kvstore {
namespace {

using engine::FlashAttn;

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

  for (Codec codec : {Codec::exact, Codec::exact_zstd, Codec::q8_0, Codec::q4_0}) {
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

}  // namespace
}  // namespace llmd::kvstore
