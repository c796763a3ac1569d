// The embed thread's work (see embed_worker.h).
#include "core/embed_worker.h"

#include "common/utf8.h"
#include "core/service.h"

namespace llmd::core {

Result<EmbedResult> EmbedWorker::run(const EmbedRequest& request, const EmbedTokenLimits& limits,
                                     const std::atomic<bool>* cancel) {
  std::vector<std::vector<engine::Token>> tokens;
  tokens.reserve(request.inputs.size());
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < request.inputs.size(); ++i) {
    const std::string which = request.inputs.size() == 1 ? std::string("the input") : "input " + std::to_string(i);
    if (const auto* text = std::get_if<std::string>(&request.inputs[i])) {
      if (text->empty()) return Error(Errc::invalid_argument, which + " is an empty string").with_param("input");
      if (!engine::is_valid_utf8(*text)) return Error(Errc::invalid_argument, which + " is not valid UTF-8").with_param("input");
      // As llama-server tokenizes embedding inputs: the model's BOS/EOS (a BERT's [CLS]/[SEP]) added.
      auto t = tok_.tokenize(*text, /*add_special=*/true, /*parse_special=*/true);
      if (!t) return t.error().with_context(which).with_param("input");
      tokens.push_back(std::move(*t));
    } else {
      tokens.push_back(std::get<std::vector<engine::Token>>(request.inputs[i]));
    }
    if (tokens.back().empty()) return Error(Errc::invalid_argument, which + " has no tokens").with_param("input");
    total += tokens.back().size();
  }
  if (limits.max_tokens != 0 && total > limits.max_tokens) {
    return Error(Errc::invalid_argument, "the inputs have " + std::to_string(total) + " tokens together, more than the " +
                                             std::to_string(limits.max_tokens) + " one embeddings request may have")
        .with_limit("input", limits.max_tokens, total);
  }
  if (limits.max_prompt_tokens != 0 && total > limits.max_prompt_tokens) {
    return over_limit("the request brings " + std::to_string(total) + " tokens", "max-prompt-tokens",
                      limits.max_prompt_tokens, total);
  }
  if (!embedder_) {
    auto e = engine::Embedder::create(model_, {config_.n_ctx, config_.n_seq_max, config_.threads});
    if (!e) return e.error().with_context("creating the embeddings context");
    embedder_ = std::move(*e);
    created_.store(true, std::memory_order_relaxed);
  }
  auto vectors = embedder_->embed(tokens, cancel);
  if (!vectors) return vectors.error();
  return EmbedResult{std::move(*vectors), total};
}

}  // namespace llmd::core
