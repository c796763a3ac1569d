// Tokenisation through llama.cpp's vocabulary API (see tokenizer.h).
#include "engine/tokenizer.h"

#include <exception>

#include <llama.h>

#include <climits>

namespace llmd::engine {

Tokenizer::Tokenizer(const Model& model)
    : vocab_(llama_model_get_vocab(model.handle())), n_vocab_(llama_vocab_n_tokens(vocab_)) {}

Result<std::vector<Token>> Tokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
  if (text.size() > kMaxTokenizeBytes) {
    return Error(Errc::invalid_argument, "text of " + std::to_string(text.size()) + " bytes is larger than the " +
                                             std::to_string(kMaxTokenizeBytes) + "-byte limit");
  }
  std::vector<Token> tokens(text.size() + 4);
  // A SentencePiece vocabulary without byte tokens (TinyStories-656K's) cannot encode a character
  // it lacks ("{", "é", ...): llama.cpp throws std::out_of_range from byte_to_token. That is the
  // text's problem, not a reason to end the daemon.
  try {
    int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                               static_cast<int32_t>(tokens.size()), add_special, parse_special);
    if (n == INT32_MIN) return Error(Errc::invalid_argument, "text produces too many tokens");
    if (n < 0) {
      tokens.resize(static_cast<size_t>(-n));
      n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                         static_cast<int32_t>(tokens.size()), add_special, parse_special);
      if (n < 0) return Error(Errc::internal, "tokenizer disagreed with itself about the token count");
    }
    tokens.resize(static_cast<size_t>(n));
  } catch (const std::exception&) {
    return Error(Errc::invalid_argument,
                 "the text has a character this model's vocabulary cannot encode (it has no byte tokens)");
  }
  return tokens;
}

std::string Tokenizer::piece(Token token, bool render_special) const {
  if (!is_valid(token)) return {};
  char buf[128];
  int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof buf, 0, render_special);
  if (n >= 0) return std::string(buf, static_cast<size_t>(n));
  std::string s(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab_, token, s.data(), static_cast<int32_t>(s.size()), 0, render_special);
  if (n < 0) return {};
  s.resize(static_cast<size_t>(n));
  return s;
}

std::string Tokenizer::detokenize(std::span<const Token> tokens, bool render_special) const {
  for (Token t : tokens) {
    if (!is_valid(t)) return {};
  }
  // Drop the BOS/EOS the tokenizer added ourselves: llama.cpp's remove_special would also keep the
  // SPM prefix space after a BOS, and the contract here is detokenize(tokenize(t)) == t.
  if (!tokens.empty() && llama_vocab_get_add_bos(vocab_) && tokens.front() == llama_vocab_bos(vocab_)) {
    tokens = tokens.subspan(1);
  }
  if (!tokens.empty() && llama_vocab_get_add_eos(vocab_) && tokens.back() == llama_vocab_eos(vocab_)) {
    tokens = tokens.first(tokens.size() - 1);
  }
  if (tokens.empty()) return {};
  std::string s(tokens.size() * 8 + 16, '\0');
  int32_t n = llama_detokenize(vocab_, tokens.data(), static_cast<int32_t>(tokens.size()), s.data(),
                               static_cast<int32_t>(s.size()), false, render_special);
  if (n < 0) {
    s.resize(static_cast<size_t>(-n));
    n = llama_detokenize(vocab_, tokens.data(), static_cast<int32_t>(tokens.size()), s.data(),
                         static_cast<int32_t>(s.size()), false, render_special);
    if (n < 0) return {};
  }
  s.resize(static_cast<size_t>(n));
  return s;
}

bool Tokenizer::is_eog(Token token) const { return is_valid(token) && llama_vocab_is_eog(vocab_, token); }
Token Tokenizer::bos() const { return llama_vocab_bos(vocab_); }
Token Tokenizer::eos() const { return llama_vocab_eos(vocab_); }
bool Tokenizer::adds_bos() const { return llama_vocab_get_add_bos(vocab_); }

}  // namespace llmd::engine
