// First-byte groups of a vocabulary (see grammar_filter.h).
#include "engine/grammar_filter.h"

#include <llama.h>

#include <string>

namespace llmd::engine {

FirstByteIndex build_first_byte_index(const llama_vocab* vocab) {
  FirstByteIndex idx;
  idx.single.fill(-1);
  const int32_t n = llama_vocab_n_tokens(vocab);
  std::string buf(256, '\0');
  for (Token t = 0; t < n; ++t) {
    int32_t len = llama_token_to_piece(vocab, t, buf.data(), static_cast<int32_t>(buf.size()), 0, /*special=*/true);
    if (len < 0) {
      buf.resize(static_cast<std::size_t>(-len));
      len = llama_token_to_piece(vocab, t, buf.data(), static_cast<int32_t>(buf.size()), 0, true);
    }
    if (llama_vocab_is_eog(vocab, t) || len <= 0) {
      idx.always.push_back(t);
      continue;
    }
    const auto b = static_cast<unsigned char>(buf[0]);
    idx.by_byte[b].push_back(t);
    if (len == 1 && idx.single[b] < 0) idx.single[b] = t;
  }
  return idx;
}

bool grammar_has_tokens(std::string_view g) {
  for (std::size_t i = 0; i < g.size(); ++i) {
    const char c = g[i];
    if (c == '#') {  // a comment, to the end of the line
      while (i < g.size() && g[i] != '\n' && g[i] != '\r') ++i;
    } else if (c == '"' || c == '[') {  // a string or a character class, escapes skipped
      const char close = c == '"' ? '"' : ']';
      for (++i; i < g.size() && g[i] != close; ++i) {
        if (g[i] == '\\') ++i;
      }
    } else if (c == '<') {
      return true;
    }
  }
  return false;
}

}  // namespace llmd::engine
