// ggml type names, sizes and row conversion (see ggml_types.h).
#include "engine/ggml_types.h"

#include <ggml.h>

#include <cstring>
#include <vector>

#include "engine/backend.h"

namespace llmd::engine {
namespace {

bool valid_type(GgmlType t) {
  if (t < 0 || t >= GGML_TYPE_COUNT) return false;
  const ggml_type_traits* tr = ggml_get_type_traits(static_cast<ggml_type>(t));
  return tr != nullptr && tr->type_size > 0 && tr->blck_size > 0;
}

// Types ggml_quantize_chunk() can write without an importance matrix.
bool can_produce(ggml_type t) {
  switch (t) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
    case GGML_TYPE_Q8_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
    case GGML_TYPE_IQ4_NL:
      return true;
    default:
      return false;
  }
}

}  // namespace

Result<GgmlType> ggml_type_from_name(std::string_view name) {
  for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
    if (!valid_type(t)) continue;
    const char* n = ggml_type_name(static_cast<ggml_type>(t));
    if (n != nullptr && name == n) return GgmlType{t};
  }
  return Error(Errc::invalid_argument, "unknown tensor type '" + std::string(name) + "'");
}

std::string ggml_type_to_name(GgmlType type) {
  if (!valid_type(type)) return "type-" + std::to_string(type);
  return ggml_type_name(static_cast<ggml_type>(type));
}

std::optional<uint64_t> ggml_row_bytes(GgmlType type, int64_t n) {
  if (!valid_type(type) || n < 0) return std::nullopt;
  if (n % ggml_blck_size(static_cast<ggml_type>(type)) != 0) return std::nullopt;
  return static_cast<uint64_t>(ggml_row_size(static_cast<ggml_type>(type), n));
}

std::optional<int64_t> ggml_row_elements(GgmlType type, uint64_t row_bytes) {
  if (!valid_type(type)) return std::nullopt;
  const auto t = static_cast<ggml_type>(type);
  const uint64_t block_bytes = ggml_type_size(t);
  if (block_bytes == 0 || row_bytes % block_bytes != 0) return std::nullopt;
  return static_cast<int64_t>(row_bytes / block_bytes) * ggml_blck_size(t);
}

std::optional<uint64_t> kv_type_row_bytes(std::string_view type_name, int64_t n) {
  auto t = ggml_type_from_name(type_name);
  if (!t) return std::nullopt;
  return ggml_row_bytes(*t, n);
}

Status convert_rows(GgmlType src_type, const void* src, GgmlType dst_type, void* dst, int64_t n_rows,
                    int64_t n_per_row) {
  ensure_backend();  // initialises ggml's f16 tables
  if (!valid_type(src_type) || !valid_type(dst_type)) {
    return Error(Errc::invalid_argument, "convert_rows: unknown tensor type");
  }
  const auto src_row = ggml_row_bytes(src_type, n_per_row);
  const auto dst_row = ggml_row_bytes(dst_type, n_per_row);
  if (!src_row || !dst_row || n_rows < 0) {
    return Error(Errc::invalid_argument, "convert_rows: row length " + std::to_string(n_per_row) +
                                             " does not fit " + ggml_type_to_name(src_type) + " -> " +
                                             ggml_type_to_name(dst_type));
  }
  const ggml_type st = static_cast<ggml_type>(src_type);
  const ggml_type dt = static_cast<ggml_type>(dst_type);
  const ggml_type_traits* src_tr = ggml_get_type_traits(st);
  if (src_type != GGML_TYPE_F32 && src_tr->to_float == nullptr) {
    return Error(Errc::invalid_argument, "convert_rows: cannot read " + ggml_type_to_name(src_type));
  }
  if (!can_produce(dt) || ggml_quantize_requires_imatrix(dt)) {
    return Error(Errc::invalid_argument, "convert_rows: cannot produce " + ggml_type_to_name(dst_type));
  }
  if (src_type == dst_type) {
    std::memcpy(dst, src, *src_row * static_cast<size_t>(n_rows));
    return {};
  }
  std::vector<float> row(static_cast<size_t>(n_per_row));
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* sr = s + static_cast<size_t>(r) * *src_row;
    uint8_t* drow = d + static_cast<size_t>(r) * *dst_row;
    const float* f = nullptr;
    if (st == GGML_TYPE_F32) {
      f = reinterpret_cast<const float*>(sr);
    } else {
      src_tr->to_float(sr, row.data(), n_per_row);
      f = row.data();
    }
    if (dt == GGML_TYPE_F32) {
      std::memcpy(drow, f, static_cast<size_t>(n_per_row) * sizeof(float));
    } else {
      ggml_quantize_chunk(dt, f, drow, 0, 1, n_per_row, nullptr);
    }
  }
  return {};
}

}  // namespace llmd::engine
