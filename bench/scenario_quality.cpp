// Scenario "quality" (see scenario_quality.h).
//
// On both real models of ../shared/models (stories260K; TinyStories-656K, Q8_0 weights, whose
// context of 512 leaves a 384-token history). Method, per model and prompt p (50 prompts, each
// from its own first word of a fixed list):
//  1. History: BOS + the first word, then greedy tokens until slot 0 holds H tokens (512, or what
//     the model's context leaves beside the continuation). End-of-
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
//  4. llama.cpp's own quantized KV cache, for comparison (rows "llama.cpp q8_0" / "q4_0"): two
//     more contexts with flash attention on (ggml needs it for a quantized V), one f16 and one with
//     -ctk/-ctv of the type (ggml rotates K and V with a Hadamard transform where the head size
//     allows), each fed the history and the continuation as batches; the quantized one is
//     compared with the f16 one. Its history was computed over quantized KV too, so the row is an
//     upper bound on what storing the exact history in that type costs.
//  Configurations whose restored state is byte-identical to one already measured for the prompt
//  (every exact one; every policy at 64-token chunks; the position policies where they choose what
//  q4_0 does) share its teacher-forcing result instead of decoding again.
//
// Protected chunks scale with the chunk size so that they always cover >= 16 tokens of attention
// sink and >= 32 tokens of recent window: sink_chunks = ceil(16 / chunk), recent_chunks =
// ceil(32 / chunk), i.e. 1 + 2 at 16 and 1 + 1 at 64 (the "lossy %" column shows how much of the
// history each row actually compressed). KL: the mean over all steps of all prompts, and the 99th
// percentile of the steps. A Pareto table per model lists the rows no other row beats on both
// bytes and agreement.
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
#include <memory>
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

constexpr int kMaxHistory = 512;  // long enough that the position policies have unprotected chunks to grade
constexpr int kFollow = 128;
constexpr int kSinkTokens = 16, kRecentTokens = 32;
constexpr int kChunkSizes[] = {16, 64};
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
                                {"kivi8", kvstore::PolicyKind::kivi8, 0.0},
                                {"kivi4", kvstore::PolicyKind::kivi4, 0.0},
                                {"kivi2", kvstore::PolicyKind::kivi2, 0.0},
                                {"pos0.5", kvstore::PolicyKind::position, 0.5},
                                {"pos0.45", kvstore::PolicyKind::position, 0.45},
                                {"pos0.4", kvstore::PolicyKind::position, 0.4},
                                {"attn0.5", kvstore::PolicyKind::attention, 0.5},
                                {"attn0.45", kvstore::PolicyKind::attention, 0.45},
                                {"attn0.4", kvstore::PolicyKind::attention, 0.4}};
constexpr std::size_t kNumPolicies = std::size(kPolicies);
constexpr std::size_t kNumChunks = std::size(kChunkSizes);

// Per (policy, chunk size): one sample per prompt for each measure.
struct Cell {
  std::vector<double> bytes_per_token, agree_pct, mean_kl, encode_us, decode_us;
  std::vector<double> step_kl;  // every teacher-forced step of every prompt
  double max_kl = 0.0;
  std::uint64_t lossy_cells = 0, cells = 0;
};

// llama.cpp's own quantized KV cache (step 4), per type.
constexpr const char* kLlamaKvTypes[] = {"q8_0", "q4_0"};
constexpr std::size_t kNumLlamaKv = std::size(kLlamaKvTypes);

struct Results {
  int history = 0;  // H
  Cell cells[kNumPolicies][kNumChunks];
  std::vector<double> all_q8_bytes_per_token[kNumChunks];
  Cell llama_kv[kNumLlamaKv];
  std::string llama_kv_skipped[kNumLlamaKv];  // why a type could not be measured
  double llama_f16_bytes_per_token = 0;
};

// Greedy history (history_len tokens, decoded into the exact slot) and its greedy continuation
// (kFollow tokens); on return the exact slot holds the history only.
Status generate(engine::Context& ctx, const engine::Tokenizer& tok, const std::vector<bool>& allowed,
                const char* word, int history_len, std::vector<engine::Token>& history, std::vector<engine::Token>& follow,
                std::vector<float>& attention) {
  ctx.seq_clear(kExactSlot);
  auto start = tok.tokenize(word, true, false);
  if (!start) return start.error();
  history = *start;
  follow.clear();
  if (history.empty() || history.size() >= static_cast<std::size_t>(history_len)) {
    return Error(Errc::internal, std::string("unexpected tokenization of '") + word + "'");
  }
  LLMD_TRY_STATUS(feed(ctx, history, 0, kExactSlot, false));
  std::int32_t last = static_cast<std::int32_t>(history.size()) - 1;  // batch index of the last logits
  const std::size_t total = history_len + kFollow;
  const auto h = static_cast<std::size_t>(history_len);
  for (std::size_t n = history.size(); n < total; ++n) {  // n: the next token's position
    const engine::Token next = greedy(ctx.logits(last), allowed);
    // The attention the history received while it was written: what the daemon knows at write-back
    // (the continuation's attention would leak the evaluated future into the policy).
    if (n == h) attention = ctx.attention_importance(kExactSlot);
    (n < h ? history : follow).push_back(next);
    if (n + 1 < total) {  // the last continuation token is only fed later, as a batch
      LLMD_TRY_STATUS(feed(ctx, {next}, static_cast<engine::Pos>(n), kExactSlot, false));
      last = 0;
    }
  }
  if (!ctx.seq_truncate(kExactSlot, history_len)) return Error(Errc::internal, "cannot truncate the exact slot");
  return {};
}

// What teacher forcing a restored state gave, against the reference.
struct Outcome {
  int agree = 0;  // steps with the same argmax
  double kl_sum = 0.0, kl_max = 0.0;
  std::vector<double> step_kl;
};

// The context's logits for the kFollow tokens just fed (batch indices 0..), copied out.
std::vector<float> follow_logits(engine::Context& ctx) {
  const auto n_vocab = static_cast<std::size_t>(ctx.model().info().n_vocab);
  std::vector<float> out(static_cast<std::size_t>(kFollow) * n_vocab);
  for (int i = 0; i < kFollow; ++i) {
    std::copy_n(ctx.logits(i), n_vocab, out.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(i) * n_vocab));
  }
  return out;
}

// Compares the context's logits for the kFollow fed tokens (batch indices 0..) with the reference.
Outcome compare(engine::Context& ctx, const std::vector<float>& reference) {
  const int n_vocab = ctx.model().info().n_vocab;
  Outcome out;
  for (int i = 0; i < kFollow; ++i) {
    const float* p = reference.data() + static_cast<std::size_t>(i) * static_cast<std::size_t>(n_vocab);
    const float* q = ctx.logits(i);
    out.agree += argmax(p, n_vocab) == argmax(q, n_vocab) ? 1 : 0;
    const double kl = kl_divergence(p, q, n_vocab);
    out.kl_sum += kl;
    out.kl_max = std::max(out.kl_max, kl);
    out.step_kl.push_back(kl);
  }
  return out;
}

void add_outcome(const Outcome& o, Cell& cell) {
  cell.agree_pct.push_back(100.0 * o.agree / kFollow);
  cell.mean_kl.push_back(o.kl_sum / kFollow);
  cell.max_kl = std::max(cell.max_kl, o.kl_max);
  cell.step_kl.insert(cell.step_kl.end(), o.step_kl.begin(), o.step_kl.end());
}

// Restored states already teacher-forced for the current prompt (byte-identical states give
// identical outcomes: e.g. every policy at 64-token chunks, where all of the history is protected).
using Seen = std::vector<std::pair<std::vector<std::uint8_t>, Outcome>>;

// Sets the state into the policy slot, feeds it `follow` as one batch and compares each step's
// distribution with the reference.
Result<Outcome> teacher_force(engine::Context& ctx, const std::vector<std::uint8_t>& state_bytes, int history_len,
                              const std::vector<engine::Token>& follow, const std::vector<float>& reference) {
  ctx.seq_clear(kPolicySlot);
  LLMD_TRY_STATUS(ctx.seq_state_set(kPolicySlot, state_bytes));
  if (ctx.seq_pos_max(kPolicySlot) != history_len - 1) return Error(Errc::internal, "restored state has the wrong length");
  LLMD_TRY_STATUS(feed(ctx, follow, history_len, kPolicySlot, true));
  Outcome out = compare(ctx, reference);
  ctx.seq_clear(kPolicySlot);
  return out;
}

// Encodes the chunks with the policy's codecs and decodes them (timed), restores the result into
// the policy slot and compares it with the reference; one sample into `cell`.
Status measure_policy(engine::Context& ctx, const engine::SeqState& state, const std::vector<engine::KvStream>& parts,
                      int history_len, std::uint32_t chunk_tokens, const std::vector<float>& attention,
                      const kvstore::PolicyParams& params, const std::vector<engine::Token>& follow,
                      const std::vector<float>& reference, Seen& seen, Cell& cell) {
  const auto& layout = ctx.kv_layout();
  auto importance = params.kind == kvstore::PolicyKind::attention
                        ? kvstore::attention_chunk_importance(attention, history_len, chunk_tokens)
                        : std::vector<float>{};
  if (importance.empty()) importance = kvstore::position_importance(parts.size(), params);
  const auto codecs = kvstore::choose_codecs(params, importance, kvstore::codec_ratios(layout, chunk_tokens));
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
    auto outcome = teacher_force(ctx, state_bytes, history_len, follow, reference);
    if (!outcome) return outcome.error();
    seen.emplace_back(std::move(state_bytes), *outcome);
    it = std::prev(seen.end());
  }
  const Outcome& o = it->second;

  const double cells_d = static_cast<double>(n_cells);
  cell.bytes_per_token.push_back(static_cast<double>(bytes) / cells_d);
  cell.encode_us.push_back(1e6 * encode_s / cells_d);
  cell.decode_us.push_back(1e6 * decode_s / cells_d);
  add_outcome(o, cell);
  cell.cells += n_cells;
  cell.lossy_cells += lossy;
  return {};
}

// llama.cpp's own quantized KV (step 4) for one prompt: the f16 context and each quantized one
// are fed the history and the continuation; the continuation's distributions are compared.
Status measure_llama_kv(engine::Context& f16, std::vector<std::unique_ptr<engine::Context>>& quantized,
                        const std::vector<engine::Token>& history, const std::vector<engine::Token>& follow,
                        Results& results) {
  auto run = [&](engine::Context& ctx) -> Status {
    ctx.clear_all();
    LLMD_TRY_STATUS(feed(ctx, history, 0, 0, false));
    return feed(ctx, follow, static_cast<engine::Pos>(history.size()), 0, true);
  };
  LLMD_TRY_STATUS(run(f16));
  const std::vector<float> reference = follow_logits(f16);
  results.llama_f16_bytes_per_token = static_cast<double>(f16.kv_layout().bytes_per_cell());
  for (std::size_t t = 0; t < quantized.size(); ++t) {
    if (!quantized[t]) continue;
    LLMD_TRY_STATUS(run(*quantized[t]));
    Cell& cell = results.llama_kv[t];
    add_outcome(compare(*quantized[t], reference), cell);
    cell.bytes_per_token.push_back(static_cast<double>(quantized[t]->kv_layout().bytes_per_cell()));
    cell.cells += history.size();
    cell.lossy_cells += history.size();
  }
  return {};
}

struct LlamaKv {
  std::unique_ptr<engine::Context> f16;
  std::vector<std::unique_ptr<engine::Context>> quantized;  // by kLlamaKvTypes
};

Status measure_prompt(engine::Context& ctx, LlamaKv& llama, const engine::Tokenizer& tok,
                      const std::vector<bool>& allowed, const char* word, Results& results) {
  const int history_len = results.history;
  std::vector<engine::Token> history, follow;
  std::vector<float> attention;
  LLMD_TRY_STATUS(generate(ctx, tok, allowed, word, history_len, history, follow, attention));
  if (attention.size() < static_cast<std::size_t>(history_len)) {
    return Error(Errc::internal, "no attention was observed while writing the history");
  }
  LLMD_TRY_STATUS(measure_llama_kv(*llama.f16, llama.quantized, history, follow, results));

  // The reference: the exact slot fed the continuation as one batch, then cut back again.
  LLMD_TRY_STATUS(feed(ctx, follow, history_len, kExactSlot, true));
  const std::vector<float> reference = follow_logits(ctx);
  if (!ctx.seq_truncate(kExactSlot, history_len)) return Error(Errc::internal, "cannot truncate the exact slot");

  auto bytes = ctx.seq_state_get(kExactSlot);
  if (!bytes) return bytes.error();
  auto state = engine::parse_seq_state(*bytes, ctx.seq_state_format());
  if (!state) return state.error();
  const int stream = state->active_stream();
  if (stream < 0) return Error(Errc::internal, "the exact slot's state is empty");
  const auto& all = state->streams[static_cast<std::size_t>(stream)];
  if (all.cells.size() != static_cast<std::size_t>(history_len)) {
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
    results.all_q8_bytes_per_token[c].push_back(static_cast<double>(q8_bytes) / history_len);
    for (std::size_t p = 0; p < kNumPolicies; ++p) {
      kvstore::PolicyParams params;
      params.kind = kPolicies[p].kind;
      params.target_ratio = kPolicies[p].target_ratio;
      params.sink_chunks = static_cast<std::uint32_t>((kSinkTokens + size - 1) / size);
      params.recent_chunks = static_cast<std::uint32_t>((kRecentTokens + size - 1) / size);
      LLMD_TRY_STATUS(measure_policy(ctx, *state, parts, history_len, static_cast<std::uint32_t>(size), attention,
                                     params, follow, reference, seen, results.cells[p][c]));
    }
  }
  return {};
}

double mean_of(const std::vector<double>& v) { return summarize(v).mean; }

// One printed and JSON row.
struct Line {
  std::string policy;
  int chunk = 0;  // 0: not chunked (llama.cpp's own cache)
  double lossy = 0, bpt = 0, vs_exact = 0, vs_q8 = 0, agree = 0, agree_sd = 0, mean_kl = 0, p99_kl = 0, max_kl = 0,
         enc_us = 0, dec_us = 0;
};

Line line_of(const std::string& name, int chunk, const Cell& x, double exact_bpt, double q8_bpt) {
  Line l;
  l.policy = name;
  l.chunk = chunk;
  l.lossy = x.cells ? 100.0 * static_cast<double>(x.lossy_cells) / static_cast<double>(x.cells) : 0.0;
  l.bpt = mean_of(x.bytes_per_token);
  l.vs_exact = l.bpt / exact_bpt;
  l.vs_q8 = l.bpt / q8_bpt;
  l.agree = mean_of(x.agree_pct);
  l.agree_sd = summarize(x.agree_pct).stddev;
  l.mean_kl = mean_of(x.mean_kl);
  l.p99_kl = percentile(x.step_kl, 99.0);
  l.max_kl = x.max_kl;
  l.enc_us = mean_of(x.encode_us);
  l.dec_us = mean_of(x.decode_us);
  return l;
}

// The printed tables, the JSON context and the report rows for one model.
void publish(const Results& r, const std::string& model, const std::string& model_path, Report& report) {
  std::printf("\nquality: %s, %d prompts x %d history + %d teacher-forced tokens; sink >= %d, recent >= %d tokens\n",
              model.c_str(), kPrompts, r.history, kFollow, kSinkTokens, kRecentTokens);
  std::printf("%-15s %5s %6s %9s %8s %8s %8s %10s %10s %10s %9s %9s\n", "policy", "chunk", "lossy%", "bytes/tok",
              "vs exact", "vs q8_0", "agree%", "mean KL", "p99 KL", "max KL", "enc us/t", "dec us/t");
  std::vector<Line> lines;
  bool exact_identical = true;
  for (std::size_t c = 0; c < kNumChunks; ++c) {
    const double exact_bpt = mean_of(r.cells[0][c].bytes_per_token);
    const double q8_bpt = mean_of(r.all_q8_bytes_per_token[c]);
    for (std::size_t p = 0; p < kNumPolicies; ++p) {
      const Cell& x = r.cells[p][c];
      lines.push_back(line_of(kPolicies[p].name, kChunkSizes[c], x, exact_bpt, q8_bpt));
      if (p == 0 && (lines.back().agree != 100.0 || x.max_kl != 0.0)) exact_identical = false;
      if (p == 0) continue;
      const std::string name = model + " " + kPolicies[p].name + " c" + std::to_string(kChunkSizes[c]);
      report.rows.push_back({"quality", name + " bytes/tok", summarize(x.bytes_per_token),
                             summarize(r.cells[0][c].bytes_per_token), false});
      report.rows.push_back({"quality", name + " agree %", summarize(x.agree_pct),
                             summarize(r.cells[0][c].agree_pct), true});
    }
  }
  for (std::size_t t = 0; t < kNumLlamaKv; ++t) {  // against llama.cpp's f16 cache (rows only, no positions)
    if (r.llama_kv[t].agree_pct.empty()) continue;
    lines.push_back(line_of(std::string("llama.cpp ") + kLlamaKvTypes[t], 0, r.llama_kv[t], r.llama_f16_bytes_per_token,
                            mean_of(r.llama_kv[0].bytes_per_token)));
  }
  nlohmann::json table = nlohmann::json::array();
  for (const Line& l : lines) {
    std::printf("%-15s %5s %6.1f %9.1f %8.3f %8.3f %8.2f %10.3e %10.3e %10.3e %9.3f %9.3f\n", l.policy.c_str(),
                l.chunk ? std::to_string(l.chunk).c_str() : "-", l.lossy, l.bpt, l.vs_exact, l.vs_q8, l.agree,
                l.mean_kl, l.p99_kl, l.max_kl, l.enc_us, l.dec_us);
    table.push_back({{"policy", l.policy},         {"chunk_tokens", l.chunk},       {"lossy_pct", l.lossy},
                     {"bytes_per_token", l.bpt},   {"ratio_vs_exact", l.vs_exact}, {"ratio_vs_all_q8_0", l.vs_q8},
                     {"agree_pct", l.agree},       {"agree_pct_stddev", l.agree_sd}, {"mean_kl", l.mean_kl},
                     {"p99_kl", l.p99_kl},         {"max_kl", l.max_kl},           {"encode_us_per_token", l.enc_us},
                     {"decode_us_per_token", l.dec_us}});
  }
  std::printf("lossy%%: share of history tokens in a lossy codec; vs q8_0: against every chunk in q8_0 (llama.cpp\n"
              "rows: against its f16 and q8_0 caches, rows only); KL in nats, p99 over all steps of all prompts\n");
  // Pareto: the chunked rows no other chunked row beats on both bytes (vs exact) and agreement.
  std::printf("Pareto frontier (%s): vs exact, agree%%, mean KL\n", model.c_str());
  nlohmann::json pareto = nlohmann::json::array();
  std::vector<const Line*> sorted;
  for (const Line& l : lines) {
    if (l.chunk) sorted.push_back(&l);
  }
  std::sort(sorted.begin(), sorted.end(), [](const Line* a, const Line* b) {
    return a->vs_exact != b->vs_exact ? a->vs_exact < b->vs_exact : a->agree > b->agree;
  });
  double best_agree = -1;
  for (const Line* l : sorted) {
    const bool dominated = std::any_of(sorted.begin(), sorted.end(), [&](const Line* o) {
      return o != l && o->vs_exact <= l->vs_exact && o->agree >= l->agree && (o->vs_exact < l->vs_exact || o->agree > l->agree);
    });
    if (dominated) continue;
    if (l->agree == best_agree) continue;  // the same point at another chunk size
    best_agree = l->agree;
    std::printf("  %-10s c%-3d %6.3f %8.2f %10.3e\n", l->policy.c_str(), l->chunk, l->vs_exact, l->agree, l->mean_kl);
    pareto.push_back({{"policy", l->policy}, {"chunk_tokens", l->chunk}, {"ratio_vs_exact", l->vs_exact},
                      {"agree_pct", l->agree}, {"mean_kl", l->mean_kl}});
  }
  if (!exact_identical) {
    std::fprintf(stderr, "llmd-bench: quality: WARNING: %s: the exact policy did not reproduce the exact slot bit for bit\n",
                 model.c_str());
  }
  report.context["quality"][model] = {{"model", model_path},
                                      {"prompts", kPrompts},
                                      {"history_tokens", r.history},
                                      {"teacher_forced_tokens", kFollow},
                                      {"sink_tokens_min", kSinkTokens},
                                      {"recent_tokens_min", kRecentTokens},
                                      {"exact_identical", exact_identical},
                                      {"table", table},
                                      {"pareto", pareto}};
  for (std::size_t t = 0; t < kNumLlamaKv; ++t) {
    if (!r.llama_kv_skipped[t].empty()) {
      report.context["quality"][model]["llama_kv_skipped"][kLlamaKvTypes[t]] = r.llama_kv_skipped[t];
    }
  }
}

Status run_model(const BenchEnv& env, const RealModel& spec, Report& report) {
  const std::string path = real_model_path(spec);
  auto model = engine::Model::load({path});
  if (!model) return model.error().with_context("loading " + path);
  const int train = (*model)->info().n_ctx_train;
  auto results = std::make_unique<Results>();
  results->history = std::min(kMaxHistory, (train > 0 ? train : kMaxHistory + kFollow) - kFollow);
  const int history_len = results->history;
  if (history_len < 4 * kChunkSizes[kNumChunks - 1]) {
    return Error(Errc::unsupported, std::string(spec.name) + "'s context is too short for the scenario");
  }
  engine::ContextParams cp;
  cp.n_slots = 2;
  cp.n_ctx = 2 * static_cast<std::uint32_t>(history_len + kFollow) + 64;
  cp.n_batch = 512;
  cp.n_ubatch = 512;
  cp.n_threads = env.threads;
  // Flash attention off: the attention policy needs the weights it never materialises (all rows
  // are measured in this one context, each against its own exact cache).
  cp.flash_attn = engine::FlashAttn::off;
  cp.observe_attention = true;
  auto ctx = engine::Context::create(**model, cp);
  if (!ctx) return ctx.error();
  if ((*ctx)->max_seq_len() < static_cast<std::uint32_t>(history_len + kFollow)) {
    return Error(Errc::unsupported, "the model's context is shorter than " + std::to_string(history_len + kFollow));
  }
  // llama.cpp's own caches (step 4): flash attention on, one sequence each.
  LlamaKv llama;
  engine::ContextParams lp = cp;
  lp.n_slots = 1;
  lp.n_ctx = static_cast<std::uint32_t>(history_len + kFollow);
  lp.flash_attn = engine::FlashAttn::on;
  lp.observe_attention = false;
  for (std::size_t t = 0; t <= kNumLlamaKv; ++t) {
    lp.type_k = lp.type_v = t == 0 ? "f16" : kLlamaKvTypes[t - 1];
    auto c = engine::Context::create(**model, lp);
    if (!c && t == 0) return c.error().with_context("a context with an f16 KV cache");
    if (!c) {  // e.g. stories260K: heads of 8 values are not whole blocks of ggml's quantized types
      results->llama_kv_skipped[t - 1] = c.error().message();
      std::fprintf(stderr, "llmd-bench: quality: %s: no llama.cpp %s KV cache: %s\n", spec.name, lp.type_k.c_str(),
                   c.error().message().c_str());
      llama.quantized.emplace_back();
      continue;
    }
    (t == 0 ? llama.f16 : llama.quantized.emplace_back()) = std::move(*c);
  }
  engine::Tokenizer tok(**model);

  const std::vector<bool> allowed = story_tokens(tok);
  const auto t0 = Clock::now();
  for (int p = 0; p < kPrompts; ++p) {
    (*ctx)->clear_all();
    LLMD_TRY_STATUS(measure_prompt(**ctx, llama, tok, allowed, kFirstWords[p], *results));
  }
  std::fprintf(stderr, "llmd-bench: quality: %s: %d prompts in %.1f s\n", spec.name, kPrompts,
               std::chrono::duration<double>(Clock::now() - t0).count());
  publish(*results, spec.name, path, report);
  return {};
}

}  // namespace

Status run_quality_scenario(const BenchEnv& env, Report& report) {
  for (const RealModel& m : kRealModels) LLMD_TRY_STATUS(run_model(env, m, report));
  return {};
}

}  // namespace llmd::bench
