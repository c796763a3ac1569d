// Scenario "window" (see scenario_window.h).
#include "bench/scenario_window.h"

#include <cmath>
#include <cstdio>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/lm_eval.h"
#include "engine/context.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace llmd::bench {
namespace {

constexpr int kText = 384;    // fits TinyStories-656K's 512-token training context with the reference
constexpr int kWindow = 128;  // the sequence limit the policies keep to
constexpr int kSink = 4;      // tokens that never leave (StreamingLLM's attention sinks; llmd's system prompt)
constexpr int kKeep = kWindow / 2;  // what a move leaves: context-fill-target's default, 50%
constexpr engine::SeqId kFullSlot = 0, kPolicySlot = 1;
constexpr const char* kFirstWords[] = {"Once", "One",  "Lily", "Tom", "The",  "There", "In",  "A",   "Sam",  "Timmy",
                                       "Sue",  "Ben",  "Mia",  "Max", "Anna", "Jack",  "Sara", "Bob", "Lucy", "Tim"};
constexpr int kPrompts = static_cast<int>(std::size(kFirstWords));

enum class Policy { drop_oldest, sliding };
constexpr Policy kPolicies[] = {Policy::drop_oldest, Policy::sliding};
const char* name_of(Policy p) { return p == Policy::drop_oldest ? "drop_oldest" : "sliding"; }

struct Samples {  // one value per prompt
  std::vector<double> agree_pct, mean_kl, ppl, recomputed_per_move;
};

// The story (kText tokens, greedy in the full slot) and the full context's logits at every step
// from kWindow on (step i: after token i, predicting token i + 1), teacher-forced in one batch.
Status reference(engine::Context& ctx, const engine::Tokenizer& tok, const std::vector<bool>& allowed,
                 const char* word, std::vector<engine::Token>& text, std::vector<float>& logits) {
  const int n_vocab = tok.n_vocab();
  ctx.seq_clear(kFullSlot);
  auto start = tok.tokenize(word, true, false);
  if (!start) return start.error();
  text = *start;
  if (text.empty() || text.size() >= static_cast<std::size_t>(kText)) return Error(Errc::internal, "bad prompt");
  LLMD_TRY_STATUS(feed(ctx, text, 0, kFullSlot, false));
  while (text.size() < static_cast<std::size_t>(kText)) {
    text.push_back(greedy(ctx.logits(-1), allowed));
    LLMD_TRY_STATUS(feed(ctx, {text.back()}, static_cast<engine::Pos>(text.size() - 1), kFullSlot, false));
  }
  ctx.seq_clear(kFullSlot);
  const std::vector<engine::Token> forced(text.begin(), text.end() - 1);
  LLMD_TRY_STATUS(feed(ctx, forced, 0, kFullSlot, true));
  logits.clear();
  for (int i = kWindow; i < kText - 1; ++i) {
    const float* l = ctx.logits(i);
    logits.insert(logits.end(), l, l + n_vocab);
  }
  ctx.seq_clear(kFullSlot);
  return {};
}

// The story fed token by token through a sequence of at most kWindow tokens under the policy,
// compared with the full context at each step from kWindow on.
Status run_policy(engine::Context& ctx, int n_vocab, Policy policy, const std::vector<engine::Token>& text,
                  const std::vector<float>& full, Samples& out) {
  ctx.seq_clear(kPolicySlot);
  std::vector<engine::Token> window;  // what the policy's sequence holds, in position order
  int agree = 0, steps = 0, moves = 0, recomputed = 0;
  double kl = 0, nll = 0;
  for (int i = 0; i < kText - 1; ++i) {
    if (window.size() == static_cast<std::size_t>(kWindow)) {
      const auto drop = static_cast<std::ptrdiff_t>(window.size() - kKeep);
      window.erase(window.begin() + kSink, window.begin() + kSink + drop);
      ++moves;
      if (policy == Policy::sliding) {
        if (!ctx.seq_drop_range(kPolicySlot, kSink, static_cast<engine::Pos>(kSink + drop))) {
          return Error(Errc::unsupported, "the model's KV cannot shift");
        }
      } else {
        ctx.seq_clear(kPolicySlot);
        LLMD_TRY_STATUS(feed(ctx, window, 0, kPolicySlot, false));
        recomputed += static_cast<int>(window.size());
      }
    }
    LLMD_TRY_STATUS(feed(ctx, {text[static_cast<std::size_t>(i)]}, static_cast<engine::Pos>(window.size()), kPolicySlot, true));
    window.push_back(text[static_cast<std::size_t>(i)]);
    if (i < kWindow) continue;
    const float* q = ctx.logits(0);
    const float* p = full.data() + static_cast<std::size_t>(i - kWindow) * static_cast<std::size_t>(n_vocab);
    agree += argmax(p, n_vocab) == argmax(q, n_vocab) ? 1 : 0;
    kl += kl_divergence(p, q, n_vocab);
    nll -= log_prob(q, n_vocab, text[static_cast<std::size_t>(i + 1)]);
    ++steps;
  }
  ctx.seq_clear(kPolicySlot);
  out.agree_pct.push_back(100.0 * agree / steps);
  out.mean_kl.push_back(kl / steps);
  out.ppl.push_back(std::exp(nll / steps));
  out.recomputed_per_move.push_back(moves > 0 ? static_cast<double>(recomputed) / moves : 0.0);
  return {};
}

Status measure_model(const BenchEnv& env, const std::string& file, Report& report, nlohmann::json& context) {
  const std::string path = std::string(LLMD_BENCH_SHARED_MODELS_DIR) + "/" + file;
  auto model = engine::Model::load({path});
  if (!model) return model.error().with_context("loading " + path);
  engine::ContextParams cp;
  cp.n_slots = 2;
  cp.n_ctx = kText + kWindow + 64;
  cp.n_batch = 512;
  cp.n_ubatch = 512;
  cp.n_threads = env.threads;
  cp.flash_attn = engine::FlashAttn::off;  // the same values wherever a sequence's cells lie
  auto ctx = engine::Context::create(**model, cp);
  if (!ctx) return ctx.error();
  if ((*ctx)->max_seq_len() < static_cast<std::uint32_t>(kText)) {
    return Error(Errc::unsupported, file + ": the model's context is shorter than " + std::to_string(kText));
  }
  engine::Tokenizer tok(**model);
  const std::vector<bool> allowed = story_tokens(tok);
  Samples samples[std::size(kPolicies)];
  std::vector<double> full_ppl;
  std::vector<engine::Token> text;
  std::vector<float> full;
  for (const char* word : kFirstWords) {
    LLMD_TRY_STATUS(reference(**ctx, tok, allowed, word, text, full));
    double nll = 0;
    for (int i = kWindow; i < kText - 1; ++i) {
      nll -= log_prob(full.data() + static_cast<std::size_t>(i - kWindow) * static_cast<std::size_t>(tok.n_vocab()),
                      tok.n_vocab(), text[static_cast<std::size_t>(i + 1)]);
    }
    full_ppl.push_back(std::exp(nll / (kText - 1 - kWindow)));
    for (std::size_t p = 0; p < std::size(kPolicies); ++p) {
      LLMD_TRY_STATUS(run_policy(**ctx, tok.n_vocab(), kPolicies[p], text, full, samples[p]));
    }
  }
  const auto mean = [](const std::vector<double>& v) { return summarize(v).mean; };
  std::printf("%-26s %-12s %8s %10s %8s %10s   (full-context ppl %.3f)\n", file.c_str(), "policy", "agree%",
              "mean KL", "ppl", "recomp/mv", mean(full_ppl));
  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t p = 0; p < std::size(kPolicies); ++p) {
    const Samples& s = samples[p];
    std::printf("%-26s %-12s %8.2f %10.4f %8.3f %10.1f\n", "", name_of(kPolicies[p]), mean(s.agree_pct),
                mean(s.mean_kl), mean(s.ppl), mean(s.recomputed_per_move));
    rows.push_back({{"policy", name_of(kPolicies[p])},
                    {"agree_pct", mean(s.agree_pct)},
                    {"agree_pct_stddev", summarize(s.agree_pct).stddev},
                    {"mean_kl", mean(s.mean_kl)},
                    {"ppl", mean(s.ppl)},
                    {"recomputed_tokens_per_move", mean(s.recomputed_per_move)}});
  }
  context[file] = {{"full_context_ppl", mean(full_ppl)}, {"policies", rows}};
  // The summary rows: sliding in llmd's column, drop_oldest in the baseline's.
  const Samples& drop = samples[0];
  const Samples& slide = samples[1];
  const std::string m = file.substr(0, file.find('.'));
  auto row = [&](const std::string& metric, const std::vector<double>& a, const std::vector<double>& b, bool higher) {
    Row r{"window", m + " " + metric, summarize(a), summarize(b), higher};
    r.baseline = "drop_oldest";
    report.rows.push_back(std::move(r));
  };
  row("agree % vs full", slide.agree_pct, drop.agree_pct, true);
  row("KL vs full", slide.mean_kl, drop.mean_kl, false);
  row("ppl", slide.ppl, drop.ppl, false);
  return {};
}

}  // namespace

Status run_window_scenario(const BenchEnv& env, Report& report) {
  std::printf("\nwindow: %d prompts x %d-token stories through a %d-token sequence (sink %d, a move keeps %d); "
              "sliding vs drop_oldest against the full context\n",
              kPrompts, kText, kWindow, kSink, kKeep);
  nlohmann::json context;
  for (const char* file : {"stories260K.gguf", "TinyStories-656K-Q8_0.gguf"}) {
    LLMD_TRY_STATUS(measure_model(env, file, report, context));
  }
  context["text_tokens"] = kText;
  context["window_tokens"] = kWindow;
  context["sink_tokens"] = kSink;
  context["kept_after_move"] = kKeep;
  report.context["window"] = context;
  return {};
}

}  // namespace llmd::bench
