// Filtering a vocabulary through a grammar without walking the grammar over every token.
//
// llama.cpp's grammar sampler decodes each candidate's text and runs it against the grammar's
// stacks: about 5 ms per token over a 49k vocabulary, paid whenever the token a chain picked is
// rejected (on a constrained answer's structural positions, most of them). FirstByteIndex groups
// the vocabulary by the first byte of each token's text; a group whose one-byte token the grammar
// rejects is rejected whole (every token of it starts with that byte, and the grammar matches text
// byte by byte, a partial UTF-8 sequence included), so only the surviving groups are filtered.
// Exactly the full filter's result, except where that reasoning does not hold: grammars with token
// rules (`<...>` elements match a token by id, not by text) are filtered whole (grammar_has_tokens).
//
// Thread-safety: a FirstByteIndex is immutable once built; any thread may read it.
#pragma once

#include <array>
#include <string_view>
#include <vector>

#include "engine/types.h"

struct llama_vocab;

namespace llmd::engine {

struct FirstByteIndex {
  std::array<Token, 256> single{};                 // the token whose text is that one byte; -1: none
  std::array<std::vector<Token>, 256> by_byte;     // tokens whose text starts with that byte
  std::vector<Token> always;                       // end-of-generation and empty tokens: always filtered
};

// Built from the vocabulary's token texts as llama.cpp's grammar sees them (special tokens rendered).
FirstByteIndex build_first_byte_index(const llama_vocab* vocab);

// Whether a GBNF grammar has token elements (`<...>`, `!<...>`) outside strings, character classes
// and comments: then it cannot be filtered by first bytes.
bool grammar_has_tokens(std::string_view gbnf);

}  // namespace llmd::engine
