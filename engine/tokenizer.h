// Text <-> tokens with a model's vocabulary.
//
// Thread-safety: all methods are const and safe to call concurrently (llama.cpp's tokenizer API is
// thread-safe). The Model must outlive the Tokenizer.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/model.h"
#include "engine/types.h"

struct llama_vocab;

namespace llmd::engine {

// Largest text tokenize() accepts, in bytes.
inline constexpr size_t kMaxTokenizeBytes = 64u << 20;

class Tokenizer {
 public:
  explicit Tokenizer(const Model& model);

  // add_special: add BOS/EOS as the model's metadata asks. parse_special: treat control-token text
  // ("<|im_start|>") as those tokens instead of plain text. invalid_argument if text is larger than
  // kMaxTokenizeBytes, or has a character the vocabulary cannot encode (an SPM vocabulary
  // without byte tokens, such as TinyStories-656K's, lacks "{", "é", ...).
  Result<std::vector<Token>> tokenize(std::string_view text, bool add_special, bool parse_special) const;

  // The raw bytes of one token as they should be appended to output (may be part of a UTF-8
  // character). Control tokens render as "" unless render_special. Invalid ids render as "".
  std::string piece(Token token, bool render_special = false) const;

  // All tokens to text, as llama.cpp joins them: the BOS/EOS the tokenizer adds and the leading
  // space an SPM vocabulary prefixes are removed, so detokenize(tokenize(t, true, false)) == t.
  std::string detokenize(std::span<const Token> tokens, bool render_special = false) const;

  bool is_eog(Token token) const;  // end of generation (EOS, EOT, ...)
  bool is_valid(Token token) const { return token >= 0 && token < n_vocab_; }
  Token bos() const;
  Token eos() const;
  bool adds_bos() const;
  int32_t n_vocab() const { return n_vocab_; }

 private:
  const llama_vocab* vocab_;
  int32_t n_vocab_;
};

}  // namespace llmd::engine
