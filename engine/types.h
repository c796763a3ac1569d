// Basic engine vocabulary, shared by everything that talks to the engine. No llama.h here: the
// engine's public headers are free of llama.cpp types so that nothing outside engine/
// includes llama.h (ARCHITECTURE.md, "Dependency rules").
#pragma once

#include <cstdint>

namespace llmd::engine {

using Token = std::int32_t;  // a vocabulary id (llama_token)
using Pos = std::int32_t;    // a position in a sequence (llama_pos)
using SeqId = std::int32_t;  // a sequence (slot) in a context (llama_seq_id)

inline constexpr Token kNoToken = -1;

}  // namespace llmd::engine
