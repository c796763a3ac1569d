// Everything the library returns through an out-parameter is ONE malloc'd block: the C structs (and
// arrays of pointers to them) first, then the strings they point to. So llmc_free is free(), and a
// caller cannot leak half of a result.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>

namespace llmc::detail {

// Counts the bytes a block needs: fixed parts (each aligned) and strings (each NUL-terminated).
class BlockSize {
 public:
  template <typename T>
  std::size_t add(std::size_t count = 1) {  // returns the offset of the part
    fixed_ = align(fixed_);
    const std::size_t at = fixed_;
    fixed_ += sizeof(T) * count;
    return at;
  }
  void str(std::string_view s) { strings_ += s.size() + 1; }
  std::size_t total() const { return align(fixed_) + strings_; }
  std::size_t strings_start() const { return align(fixed_); }

  static std::size_t align(std::size_t n) {
    constexpr std::size_t a = alignof(std::max_align_t);
    return (n + a - 1) / a * a;
  }

 private:
  std::size_t fixed_ = 0;
  std::size_t strings_ = 0;
};

class Block {
 public:
  explicit Block(const BlockSize& size) : tail_(size.strings_start()), end_(size.total()) {
    p_ = static_cast<char*>(std::calloc(1, end_ == 0 ? 1 : end_));
    if (p_ == nullptr) throw std::bad_alloc();
  }
  ~Block() { std::free(p_); }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  template <typename T>
  T* at(std::size_t offset) {
    return reinterpret_cast<T*>(p_ + offset);
  }
  // A copy of s in the block's string area (counted by BlockSize::str beforehand).
  const char* str(std::string_view s) {
    if (tail_ + s.size() + 1 > end_) std::abort();  // a counting bug: never write past the block
    char* d = p_ + tail_;
    if (!s.empty()) std::memcpy(d, s.data(), s.size());
    d[s.size()] = '\0';
    tail_ += s.size() + 1;
    return d;
  }
  void* release() {
    void* p = p_;
    p_ = nullptr;
    return p;
  }

 private:
  char* p_ = nullptr;
  std::size_t tail_;
  std::size_t end_;
};

// For unique_ptr: owns what a Block released.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace llmc::detail
