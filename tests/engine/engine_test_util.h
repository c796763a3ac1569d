// Helpers shared by the engine tests that use a real or generated model.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/batch_runner.h"
#include "engine/context.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "tests/support/test_env.h"

namespace llmd::test {

// A test-name-safe version of a model name ("tiny-q8_0" -> "tiny_q8_0").
inline std::string param_name(std::string n) {
  for (auto& c : n) {
    if (c == '-' || c == '.') c = '_';
  }
  return n;
}

// The error code of a failed status, nullopt for success (for EXPECT_EQ).
inline std::optional<Errc> code_of(const Status& s) {
  if (s.ok()) return std::nullopt;
  return s.error().code();
}

inline std::unique_ptr<engine::Model> load_model(const std::string& path) {
  auto m = engine::Model::load({path});
  if (!m) {
    ADD_FAILURE() << "loading " << path << ": " << m.error().to_string();
    return nullptr;
  }
  return std::move(*m);
}

inline std::unique_ptr<engine::Context> make_context(const engine::Model& model, uint32_t slots = 4,
                                                     uint32_t n_ctx = 1024,
                                                     engine::FlashAttn fa = engine::FlashAttn::automatic) {
  engine::ContextParams p;
  p.n_slots = slots;
  p.n_ctx = n_ctx;
  p.n_threads = 2;
  p.flash_attn = fa;
  auto c = engine::Context::create(model, p);
  if (!c) {
    ADD_FAILURE() << "creating context: " << c.error().to_string();
    return nullptr;
  }
  return std::move(*c);
}

inline engine::GenerateParams greedy(int32_t max_tokens) {
  engine::GenerateParams g;
  g.sampling.temperature = 0.0f;
  g.max_tokens = max_tokens;
  return g;
}

inline std::vector<engine::Token> tokens_of(const engine::Tokenizer& tok, const std::string& text) {
  auto t = tok.tokenize(text, true, false);
  EXPECT_TRUE(t) << t.error().to_string();
  return t ? *t : std::vector<engine::Token>{};
}

// Runs one job alone on ctx and returns its outcome.
inline engine::SequenceOutcome run_one(engine::Context& ctx, const engine::Tokenizer& tok, engine::SequenceJob job) {
  engine::BatchRunner r(ctx, tok);
  const engine::SeqId seq = job.seq;
  auto st = r.add(std::move(job));
  EXPECT_TRUE(st) << st.error().to_string();
  auto run = r.run();
  EXPECT_TRUE(run) << run.error().to_string();
  const auto* o = r.outcome(seq);
  return o ? *o : engine::SequenceOutcome{};
}

}  // namespace llmd::test
