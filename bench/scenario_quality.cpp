// Scenario "quality" (see scenario_quality.h).
//
// Method, per prompt p (50 prompts, each from its own first word of a fixed list):
//  1. History: BOS + the first word, then greedy tokens until slot 0 holds 512 tokens. End-of-
//     generation and control tokens are masked out of every greedy choice, so that no story ends
//     (after a story's natural end the model starts another one).
//  2. Continuation: 128 greedy tokens from slot 0 (single-token decodes, as the daemon generates).
//     Slot 0 is then cut back to the history and fed those 128 tokens again as one batch with
//     logits for every token: the reference distributions P_exact (step i: after token i). The
//     attention the history received while it was written (AttentionProbe; flash attention is off
//     in this scenario) is kept for the attention policies — not the continuation's, which would
//     leak the evaluated future into the policy.
//  3. Per (policy, chunk size): slot 0's state is parsed, cut into chunks, each chunk encoded with
//     the codec kvstore::choose_codecs picks (position or attention importance, the layout's codec
//     ratios) and
//     decoded again (both timed per token, best of 5 runs), and the chunks are assembled and set
//     into slot 1. Slot 1 is fed the same 128 tokens the same way (one batch, same positions, teacher forcing),
//     giving P_policy at each step. Greedy agreement: argmax P_policy == argmax P_exact. KL is over
//     the full softmax, accumulated in double.
//  Because both sides are fed identically, the exact policy must match bit for bit (KL 0, 100%
//  agreement): a check of the pipeline; a mismatch is reported (warning and JSON flag).
//  Configurations whose restored state is byte-identical to one already measured for the prompt
//  (every exact one; every policy at 64-token chunks; the position policies where they choose what
//  q4_0 does) share its teacher-forcing result instead of decoding again.
//
// Protected chunks scale with the chunk size so that they always cover >= 16 tokens of attention
// sink and >= 32 tokens of recent window: sink_chunks = ceil(16 / chunk), recent_chunks =
// ceil(32 / chunk), i.e. 1 + 2 at 16, 1 + 1 at 32 and 64 (the "lossy %" column shows how much of
// the history each row actually compressed).
//
// Bytes per token are whole blobs (headers included) over cells; "vs q8_0" compares with every
// chunk in q8_0, protected ones too. Rows in the common report table (bytes/token and agreement
// for every lossy policy) hold the exact policy in the llama.cpp column; the full table is printed
// here and kept in the JSON context under "quality".
#include "bench/scenario_quality.h"

#include "bench/lm_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/batch.h"
#include "engine/context.h"
#include "engine/model.h"
#include "engine/seq_state.h"
#include "engine/tokenizer.h"
#include "kvstore/chunk.h"
#include "kvstore/policy.h"

namespace llmd::bench {
namespace {

constexpr int kHistory = 512;  // long enough that the position policies have unprotected chunks to grade
constexpr int kFollow = 128;
constexpr int kSinkTokens = 16, kRecentTokens = 32;
constexpr int kChunkSizes[] = {16, 32, 64};
constexpr int kTimingReps = 5;  // encode/decode times: the best of this many runs per prompt
constexpr engine::SeqId kExactSlot = 0, kPolicySlot = 1;
using Clock = std::chrono::steady_clock;

// One distinct first word per prompt (TinyStories-like openings and names).
constexpr const char* kFirstWords[] = {
    "Once",   "One",    "Lily",  "Tom",   "The",       "There",  "In",    "A",     "Sam",   "Timmy",
    "Sue",    "Ben",    "Mia",   "Max",   "Anna",      "Jack",   "Sara",  "Bob",   "Lucy",  "Tim",
    "Molly",  "Spot",   "Mom",   "Dad",   "Today",     "Yesterday", "Every", "Far", "Long",  "It",
    "At",     "On",     "When",  "After", "Little",    "Big",    "Jill",  "Kitty", "Zoe",   "Billy",
    "Amy",    "Joe",    "Emma",  "Jake",  "Sally",     "Peter",  "Rosie", "Ducky", "Grandma", "Grandpa"};
constexpr int kPrompts = static_cast<int>(std::size(kFirstWords));

struct Policy {
  const char* name;
  kvstore::PolicyKind kind;
  double target_ratio;
};
constexpr Policy kPolicies[] = {{"exact", kvstore::PolicyKind::exact, 0.0},
                                {"q8_0", kvstore::PolicyKind::q8_0, 0.0},
                                {"q4_0", kvstore::PolicyKind::q4_0, 0.0},
                                {"pos0.75", kvstore::PolicyKind::position, 0.75},
                                {"pos0.5", kvstore::PolicyKind::position, 0.5},
                                {"pos0.35", kvstore::PolicyKind::position, 0.35},
                                {"attn0.75", kvstore::PolicyKind::attention, 0.75},
                                {"attn0.5", kvstore::PolicyKind::attention, 0.5},
                                {"attn0.35", kvstore::PolicyKind::attention, 0.35}};
constexpr std::size_t kNumPolicies = std::size(kPolicies);
constexpr std::size_t kNumChunks = std::size(kChunkSizes);

// Per (policy, chunk size): one sample per prompt for each measure.
struct Cell {
  std::vector<double> bytes_per_token, agree_pct, mean_kl, encode_us, decode_us;
  double max_kl = 0.0;
  std::uint64_t lossy_cells = 0, cells = 0;
};

struct Results {
  Cell cells[kNumPolicies][kNumChunks];
  std::vector<double> all_q8_bytes_per_token[kNumChunks];
};

// Greedy history (kHistory tokens, decoded into the exact slot) and its greedy continuation
// (kFollow tokens); on return the exact slot holds the history only.
Status generate(engine::Context& ctx, const engine::Tokenizer& tok, const std::vector<bool>& allowed,
                const char* word, std::vector<engine::Token>& history, std::vector<engine::Token>& follow,
                std::vector<float>& attention) {
  ctx.seq_clear(kExactSlot);
  auto start = tok.tokenize(word, true, false);
  if (!start) return start.error();
  history = *start;
  follow.clear();
  if (history.empty() || history.size() >= static_cast<std::size_t>(kHistory)) {
    return Error(Errc::internal, std::string("unexpected tokenization of '") + word + "'");
  }
  LLMD_TRY_STATUS(feed(ctx, history, 0, kExactSlot, false));
  std::int32_t last = static_cast<std::int32_t>(history.size()) - 1;  // batch index of the last logits
  const std::size_t total = kHistory + kFollow;
  for (std::size_t n = history.size(); n < total; ++n) {  // n: the next token's position
    const engine::Token next = greedy(ctx.logits(last), allowed);
    // The attention the history received while it was written: what the daemon knows at write-back
    // (the continuation's attention would leak the evaluated future into the policy).
    if (n == kHistory) attention = ctx.attention_importance(kExactSlot);
    (n < kHistory ? history : follow).push_back(next);
    if (n + 1 < total) {  // the last continuation token is only fed later, as a batch
      LLMD_TRY_STATUS(feed(ctx, {next}, static_cast<engine::Pos>(n), kExactSlot, false));
      last = 0;
    }
  }
  if (!ctx.seq_truncate(kExactSlot, kHistory)) return Error(Errc::internal, "cannot truncate the exact slot");
  return {};
}

// What teacher forcing a restored state gave, against the reference.
struct Outcome {
  int agree = 0;  // steps with the same argmax
  double kl_sum = 0.0, kl_max = 0.0;
};

// Restored states already teacher-forced for the current prompt (byte-identical states give
// identical outcomes: e.g. every policy at 64-token chunks, where all of the history is protected).
using Seen = std::vector<std::pair<std::vector<std::uint8_t>, Outcome>>;

// Sets the state into the policy slot, feeds it `follow` as one batch and compares each step's
// distribution with the reference.
Result<Outcome> teacher_force(engine::Context& ctx, const std::vector<std::uint8_t>& state_bytes,
                              const std::vector<engine::Token>& follow, const std::vector<float>& reference) {
  ctx.seq_clear(kPolicySlot);
  LLMD_TRY_STATUS(ctx.seq_state_set(kPolicySlot, state_bytes));
  if (ctx.seq_pos_max(kPolicySlot) != kHistory - 1) return Error(Errc::internal, "restored state has the wrong length");
  LLMD_TRY_STATUS(feed(ctx, follow, kHistory, kPolicySlot, true));
  const int n_vocab = ctx.model().info().n_vocab;
  Outcome out;
  for (int i = 0; i < kFollow; ++i) {
    const float* p = reference.data() + static_cast<std::size_t>(i) * static_cast<std::size_t>(n_vocab);
    const float* q = ctx.logits(i);
    out.agree += argmax(p, n_vocab) == argmax(q, n_vocab) ? 1 : 0;
    const double kl = kl_divergence(p, q, n_vocab);
    out.kl_sum += kl;
    out.kl_max = std::max(out.kl_max, kl);
  }
  ctx.seq_clear(kPolicySlot);
  return out;
}

// Encodes the chunks with the policy's codecs and decodes them (timed), restores the result into
// the policy slot and compares it with the reference; one sample into `cell`.
Status measure_policy(engine::Context& ctx, const engine::SeqState& state, const std::vector<engine::KvStream>& parts,
                      std::uint32_t chunk_tokens, const std::vector<float>& attention,
                      const kvstore::PolicyParams& params, const std::vector<engine::Token>& follow,
                      const std::vector<float>& reference, Seen& seen, Cell& cell) {
  const auto& layout = ctx.kv_layout();
  auto importance = params.kind == kvstore::PolicyKind::attention
                        ? kvstore::attention_chunk_importance(attention, kHistory, chunk_tokens)
                        : std::vector<float>{};
  if (importance.empty()) importance = kvstore::position_importance(parts.size(), params);
  const auto codecs = kvstore::choose_codecs(params, importance, kvstore::codec_ratios(layout));
  std::vector<std::vector<std::uint8_t>> blobs;
  std::vector<std::uint8_t> state_buf, scratch, state_bytes;
  std::uint64_t bytes = 0, n_cells = 0, lossy = 0;
  for (const auto& part : parts) n_cells += part.cells.size();
  double encode_s = 1e30, decode_s = 1e30;  // best of kTimingReps
  for (int rep = 0; rep < kTimingReps; ++rep) {
    blobs.clear();
    bytes = 0;
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < parts.size(); ++i) {
      auto blob = kvstore::encode_chunk(parts[i], layout, codecs[i]);
      if (!blob) return blob.error();
      bytes += blob->size();
      blobs.push_back(std::move(*blob));
    }
    // Decoded as the daemon restores: straight into the policy slot's state.
    const auto t1 = Clock::now();
    engine::SeqStateWriter out(state_buf, layout, kPolicySlot, static_cast<std::uint32_t>(state.streams.size()),
                               static_cast<std::uint32_t>(state.active_stream()), n_cells);
    std::size_t at = 0;
    for (const auto& blob : blobs) {
      auto info = kvstore::decode_chunk_into(blob, layout, out, at, scratch);
      if (!info) return info.error();
      at += info->n_cells;
    }
    const auto t2 = Clock::now();
    state_bytes.assign(out.bytes().begin(), out.bytes().end());
    encode_s = std::min(encode_s, std::chrono::duration<double>(t1 - t0).count());
    decode_s = std::min(decode_s, std::chrono::duration<double>(t2 - t1).count());
  }
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (kvstore::tolerance_level(codecs[i]) > 0) lossy += parts[i].cells.size();
  }

  auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& s) { return s.first == state_bytes; });
  if (it == seen.end()) {
    auto outcome = teacher_force(ctx, state_bytes, follow, reference);
    if (!outcome) return outcome.error();
    seen.emplace_back(std::move(state_bytes), *outcome);
    it = std::prev(seen.end());
  }
  const Outcome& o = it->second;

  const double cells_d = static_cast<double>(n_cells);
  cell.bytes_per_token.push_back(static_cast<double>(bytes) / cells_d);
  cell.encode_us.push_back(1e6 * encode_s / cells_d);
  cell.decode_us.push_back(1e6 * decode_s / cells_d);
  cell.agree_pct.push_back(100.0 * o.agree / kFollow);
  cell.mean_kl.push_back(o.kl_sum / kFollow);
  cell.max_kl = std::max(cell.max_kl, o.kl_max);
  cell.cells += n_cells;
  cell.lossy_cells += lossy;
  return {};
}

Status measure_prompt(engine::Context& ctx, const engine::Tokenizer& tok, const std::vector<bool>& allowed,
                      const char* word, Results& results) {
  std::vector<engine::Token> history, follow;
  std::vector<float> attention;
  LLMD_TRY_STATUS(generate(ctx, tok, allowed, word, history, follow, attention));
  if (attention.size() < static_cast<std::size_t>(kHistory)) {
    return Error(Errc::internal, "no attention was observed while writing the history");
  }

  // The reference: the exact slot fed the continuation as one batch, then cut back again.
  LLMD_TRY_STATUS(feed(ctx, follow, kHistory, kExactSlot, true));
  const std::size_t n_vocab = static_cast<std::size_t>(tok.n_vocab());
  std::vector<float> reference(static_cast<std::size_t>(kFollow) * n_vocab);
  for (int i = 0; i < kFollow; ++i) {
    std::copy_n(ctx.logits(i), n_vocab, reference.begin() + static_cast<std::ptrdiff_t>(i * n_vocab));
  }
  if (!ctx.seq_truncate(kExactSlot, kHistory)) return Error(Errc::internal, "cannot truncate the exact slot");

  auto bytes = ctx.seq_state_get(kExactSlot);
  if (!bytes) return bytes.error();
  auto state = engine::parse_seq_state(*bytes, ctx.seq_state_format());
  if (!state) return state.error();
  const int stream = state->active_stream();
  if (stream < 0) return Error(Errc::internal, "the exact slot's state is empty");
  const auto& all = state->streams[static_cast<std::size_t>(stream)];
  if (all.cells.size() != static_cast<std::size_t>(kHistory)) {
    return Error(Errc::internal, "the exact slot holds " + std::to_string(all.cells.size()) + " cells");
  }

  Seen seen;
  for (std::size_t c = 0; c < kNumChunks; ++c) {
    const std::size_t size = static_cast<std::size_t>(kChunkSizes[c]);
    std::vector<engine::KvStream> parts;
    std::uint64_t q8_bytes = 0;
    for (std::size_t b = 0; b < all.cells.size(); b += size) {
      auto part = engine::slice_cells(all, b, std::min(b + size, all.cells.size()));
      if (!part) return part.error();
      auto q8 = kvstore::encode_chunk(*part, ctx.kv_layout(), kvstore::Codec::q8_0);
      if (!q8) return q8.error();
      q8_bytes += q8->size();
      parts.push_back(std::move(*part));
    }
    results.all_q8_bytes_per_token[c].push_back(static_cast<double>(q8_bytes) / kHistory);
    for (std::size_t p = 0; p < kNumPolicies; ++p) {
      kvstore::PolicyParams params;
      params.kind = kPolicies[p].kind;
      params.target_ratio = kPolicies[p].target_ratio;
      params.sink_chunks = static_cast<std::uint32_t>((kSinkTokens + size - 1) / size);
      params.recent_chunks = static_cast<std::uint32_t>((kRecentTokens + size - 1) / size);
      LLMD_TRY_STATUS(measure_policy(ctx, *state, parts, static_cast<std::uint32_t>(size), attention, params, follow,
                                     reference, seen, results.cells[p][c]));
    }
  }
  return {};
}

double mean_of(const std::vector<double>& v) { return summarize(v).mean; }

// The printed table, the JSON context and the report rows.
void publish(const Results& r, const std::string& model_path, Report& report) {
  std::printf("\nquality: stories260K, %d prompts x %d history + %d teacher-forced tokens; "
              "sink >= %d, recent >= %d tokens\n",
              kPrompts, kHistory, kFollow, kSinkTokens, kRecentTokens);
  std::printf("%-8s %5s %6s %9s %8s %8s %8s %10s %10s %9s %9s\n", "policy", "chunk", "lossy%", "bytes/tok",
              "vs exact", "vs q8_0", "agree%", "mean KL", "max KL", "enc us/t", "dec us/t");
  nlohmann::json table = nlohmann::json::array();
  bool exact_identical = true;
  for (std::size_t c = 0; c < kNumChunks; ++c) {
    const double exact_bpt = mean_of(r.cells[0][c].bytes_per_token);
    const double q8_bpt = mean_of(r.all_q8_bytes_per_token[c]);
    for (std::size_t p = 0; p < kNumPolicies; ++p) {
      const Cell& x = r.cells[p][c];
      const double bpt = mean_of(x.bytes_per_token), agree = mean_of(x.agree_pct), kl = mean_of(x.mean_kl);
      const double lossy = x.cells ? 100.0 * static_cast<double>(x.lossy_cells) / static_cast<double>(x.cells) : 0.0;
      if (p == 0 && (agree != 100.0 || x.max_kl != 0.0)) exact_identical = false;
      std::printf("%-8s %5d %6.1f %9.1f %8.3f %8.3f %8.2f %10.3e %10.3e %9.3f %9.3f\n", kPolicies[p].name,
                  kChunkSizes[c], lossy, bpt, bpt / exact_bpt, bpt / q8_bpt, agree, kl, x.max_kl,
                  mean_of(x.encode_us), mean_of(x.decode_us));
      table.push_back({{"policy", kPolicies[p].name},
                       {"chunk_tokens", kChunkSizes[c]},
                       {"lossy_pct", lossy},
                       {"bytes_per_token", bpt},
                       {"ratio_vs_exact", bpt / exact_bpt},
                       {"ratio_vs_all_q8_0", bpt / q8_bpt},
                       {"agree_pct", agree},
                       {"agree_pct_stddev", summarize(x.agree_pct).stddev},
                       {"mean_kl", kl},
                       {"max_kl", x.max_kl},
                       {"encode_us_per_token", mean_of(x.encode_us)},
                       {"decode_us_per_token", mean_of(x.decode_us)}});
      if (p == 0) continue;
      const std::string name = std::string(kPolicies[p].name) + " c" + std::to_string(kChunkSizes[c]);
      report.rows.push_back({"quality", name + " bytes/tok", summarize(x.bytes_per_token),
                             summarize(r.cells[0][c].bytes_per_token), false});
      report.rows.push_back({"quality", name + " agree %", summarize(x.agree_pct),
                             summarize(r.cells[0][c].agree_pct), true});
    }
  }
  std::printf("lossy%%: share of history tokens in a lossy codec; vs q8_0: against every chunk in q8_0; KL in nats\n"
              "(in the summary table below, quality rows hold the exact policy in the llama.cpp column)\n");
  if (!exact_identical) {
    std::fprintf(stderr,
                 "llmd-bench: quality: WARNING: the exact policy did not reproduce the exact slot bit for bit\n");
  }
  report.context["quality"] = {{"model", model_path},
                               {"prompts", kPrompts},
                               {"history_tokens", kHistory},
                               {"teacher_forced_tokens", kFollow},
                               {"sink_tokens_min", kSinkTokens},
                               {"recent_tokens_min", kRecentTokens},
                               {"exact_identical", exact_identical},
                               {"table", table}};
}

}  // namespace

Status run_quality_scenario(const BenchEnv& env, Report& report) {
  const std::string path = std::string(LLMD_BENCH_SHARED_MODELS_DIR) + "/stories260K.gguf";
  auto model = engine::Model::load({path});
  if (!model) return model.error().with_context("loading " + path);
  engine::ContextParams cp;
  cp.n_slots = 2;
  cp.n_ctx = 2 * (kHistory + kFollow) + 64;
  cp.n_batch = 512;
  cp.n_ubatch = 512;
  cp.n_threads = env.threads;
  // Flash attention off: the attention policy needs the weights it never materialises (all rows
  // are measured in this one context, each against its own exact cache).
  cp.flash_attn = engine::FlashAttn::off;
  cp.observe_attention = true;
  auto ctx = engine::Context::create(**model, cp);
  if (!ctx) return ctx.error();
  if ((*ctx)->max_seq_len() < static_cast<std::uint32_t>(kHistory + kFollow)) {
    return Error(Errc::unsupported, "the model's context is shorter than " + std::to_string(kHistory + kFollow));
  }
  engine::Tokenizer tok(**model);

  const std::vector<bool> allowed = story_tokens(tok);
  Results results;
  const auto t0 = Clock::now();
  for (int p = 0; p < kPrompts; ++p) {
    (*ctx)->clear_all();
    LLMD_TRY_STATUS(measure_prompt(**ctx, tok, allowed, kFirstWords[p], results));
  }
  std::fprintf(stderr, "llmd-bench: quality: %d prompts in %.1f s\n", kPrompts,
               std::chrono::duration<double>(Clock::now() - t0).count());
  publish(results, path, report);
  return {};
}

}  // namespace llmd::bench
