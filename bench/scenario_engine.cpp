// Scenario "engine" (see scenario_engine.h).
//
// It mirrors llama-bench's method: a warm-up, then `reps` timed repetitions, each from an empty
// KV cache. pp: 512 random tokens (BOS first) decoded as one prompt. tg: from BOS, 128 single-token
// decodes. llmd's side goes through the engine as the daemon uses it (BatchRunner: batch building,
// one llama_decode per step, sampling of every generated token), so the ratio shows what the
// engine costs on top of llama.cpp. llama-bench does not sample; llmd samples greedily.
#include "bench/scenario_engine.h"

#include <chrono>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

#include "bench/process.h"
#include "engine/batch_runner.h"
#include "engine/context.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace llmd::bench {
namespace {

constexpr int kPrompt = 512;
constexpr int kGen = 128;
using Clock = std::chrono::steady_clock;

struct Samples {
  std::vector<double> pp, tg;
};

Result<double> timed_job(engine::Context& ctx, const engine::Tokenizer& tok, std::vector<engine::Token> prompt,
                         int max_tokens) {
  ctx.clear_all();
  engine::BatchRunner runner(ctx, tok);
  engine::GenerateParams g;
  g.sampling.temperature = 0.0f;
  g.max_tokens = max_tokens;
  g.ignore_eog = true;
  LLMD_TRY_STATUS(runner.add({0, std::move(prompt), g}));
  const auto t0 = Clock::now();
  LLMD_TRY_STATUS(runner.run());
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Status run_llmd(const BenchEnv& env, const engine::Model& model, Samples& out) {
  engine::ContextParams cp;
  cp.n_ctx = kPrompt + kGen;  // as llama-bench: n_prompt + n_gen
  cp.n_slots = 1;
  cp.n_batch = 2048;
  cp.n_ubatch = 512;
  cp.n_threads = env.threads;
  cp.flash_attn = engine::FlashAttn::automatic;
  auto ctx = engine::Context::create(model, cp);
  if (!ctx) return ctx.error();
  engine::Tokenizer tok(model);

  std::mt19937 rng(1);
  auto prompt = [&] {
    std::vector<engine::Token> p(kPrompt);
    for (auto& t : p) t = static_cast<engine::Token>(rng() % static_cast<unsigned>(tok.n_vocab()));
    if (tok.adds_bos()) p[0] = tok.bos();
    return p;
  };
  const engine::Token first = tok.adds_bos() ? tok.bos() : 0;

  // Warm-up, as llama-bench: one prompt run, one generation step.
  if (auto w = timed_job(**ctx, tok, prompt(), 1); !w) return w.error();
  if (auto w = timed_job(**ctx, tok, {first}, 1); !w) return w.error();
  for (int r = 0; r < env.reps; ++r) {
    // max_tokens 1: the prompt decode plus one sampled token.
    auto t = timed_job(**ctx, tok, prompt(), 1);
    if (!t) return t.error();
    out.pp.push_back(kPrompt / *t);
  }
  for (int r = 0; r < env.reps; ++r) {
    // max_tokens kGen: BOS and kGen-1 generated tokens are decoded, kGen decodes in all.
    auto t = timed_job(**ctx, tok, {first}, kGen);
    if (!t) return t.error();
    out.tg.push_back(kGen / *t);
  }
  return {};
}

Status run_llama_bench(const BenchEnv& env, const std::string& model_path, Samples& out, nlohmann::json& info) {
  const std::vector<std::string> argv = {env.tools_dir + "/llama-bench", "-m", model_path,
                                         "-p", std::to_string(kPrompt), "-n", std::to_string(kGen),
                                         "-t", std::to_string(env.threads), "-r", std::to_string(env.reps),
                                         "-b", "2048", "-ub", "512", "-fa", "auto", "-o", "json"};
  auto text = run_capture(argv, env.log_path);
  if (!text) return text.error();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(*text);
  } catch (const std::exception& e) {
    return Error(Errc::internal, std::string("cannot parse llama-bench output: ") + e.what());
  }
  for (const auto& test : j) {
    const int n_prompt = test.value("n_prompt", 0), n_gen = test.value("n_gen", 0);
    std::vector<double> samples = test.value("samples_ts", std::vector<double>{});
    auto& dst = n_prompt > 0 && n_gen == 0 ? out.pp : out.tg;
    dst.insert(dst.end(), samples.begin(), samples.end());
    info["build_commit"] = test.value("build_commit", "");
    info["cpu_info"] = test.value("cpu_info", "");
  }
  if (out.pp.empty() || out.tg.empty()) return Error(Errc::internal, "llama-bench reported no pp/tg results");
  return {};
}

}  // namespace

Status run_engine_scenario(const BenchEnv& env, Report& report) {
  auto path = ensure_model(env, "smollm2-135m", "q8_0");
  if (!path) return path.error();
  auto model = engine::Model::load({*path});
  if (!model) return model.error();

  Samples ours, theirs;
  nlohmann::json info;
  // The order alternates between rounds so that neither side always runs on a cooler or warmer
  // machine (on the 2-core reference machine the side that ran second was consistently ~4% off).
  for (int round = 0; round < env.rounds; ++round) {
    for (int side = 0; side < 2; ++side) {
      const bool llmd_now = (side == 0) == (round % 2 == 0);
      std::fprintf(stderr, "llmd-bench: engine round %d/%d: %s\n", round + 1, env.rounds,
                   llmd_now ? "llmd" : "llama-bench");
      LLMD_TRY_STATUS(llmd_now ? run_llmd(env, **model, ours) : run_llama_bench(env, *path, theirs, info));
    }
  }
  report.rows.push_back({"engine", "pp512 tok/s", summarize(ours.pp), summarize(theirs.pp), true});
  report.rows.push_back({"engine", "tg128 tok/s", summarize(ours.tg), summarize(theirs.tg), true});
  report.context["engine"] = {{"model", *path},
                              {"model_desc", (*model)->info().description},
                              {"llama_bench", info},
                              {"n_prompt", kPrompt},
                              {"n_gen", kGen}};
  return {};
}

}  // namespace llmd::bench
