// The small window onto ggml's tensor types that the rest of llmd may use without including ggml.h:
// type names, row sizes and row conversion between types (the kvstore's lossy codecs convert KV
// rows between the context's type and q8_0/q4_0/... through convert_rows()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace llmd::engine {

// A ggml_type value, kept as an int so that callers need not include ggml.h.
using GgmlType = std::int32_t;

// "f32", "f16", "bf16", "q8_0", "q4_0", ... -> type; invalid_argument for unknown names.
Result<GgmlType> ggml_type_from_name(std::string_view name);
// The type's ggml name, or "type-N" for an out-of-range value.
std::string ggml_type_to_name(GgmlType type);
// Bytes of one row of n elements of the type; nullopt if the type is unknown or n is not a
// multiple of its block size.
std::optional<std::uint64_t> ggml_row_bytes(GgmlType type, std::int64_t n);
std::optional<std::uint64_t> kv_type_row_bytes(std::string_view type_name, std::int64_t n);
// Elements in a row of `row_bytes` bytes of the type; nullopt if that is not a whole number of blocks.
std::optional<std::int64_t> ggml_row_elements(GgmlType type, std::uint64_t row_bytes);

// Converts n_rows rows of n_per_row elements from src_type to dst_type (through f32), e.g. f16 ->
// q4_0 to compress a chunk and q4_0 -> f16 to restore it. src/dst hold whole rows of their types.
// Errors: invalid_argument for an unknown type, a type that cannot be produced from f32 or a row
// length that is not a multiple of either type's block size.
Status convert_rows(GgmlType src_type, const void* src, GgmlType dst_type, void* dst, std::int64_t n_rows,
                    std::int64_t n_per_row);

}  // namespace llmd::engine
