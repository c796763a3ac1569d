// What the fuzz targets share: FUZZ_CHECK (a property that failed is a finding: the message goes
// to stderr and the process aborts, so libFuzzer keeps the input as a crash), and ByteReader, which
// draws structured values from the input's bytes for targets that build their input (D-Bus
// messages, layouts) rather than parse it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace llmd::fuzz {

[[noreturn]] inline void fail(const char* file, int line, const char* condition, const std::string& detail) {
  std::fprintf(stderr, "\n==fuzz== finding at %s:%d: %s\n==fuzz== %s\n", file, line, condition, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// Reads values off the front of the input; past its end every value is zero and strings are empty,
// so any input builds something.
class ByteReader {
 public:
  ByteReader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::size_t remaining() const { return size_ - at_; }
  bool empty() const { return at_ >= size_; }

  std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  template <typename T>
  T take() {
    T v{};
    const std::size_t n = sizeof(T) < remaining() ? sizeof(T) : remaining();
    if (n > 0) std::memcpy(&v, data_ + at_, n);
    at_ += n;
    return v;
  }
  // A string of up to `max` bytes, its length from one byte.
  std::string str(std::size_t max = 64) {
    std::size_t n = byte();
    if (n > max) n = n % (max + 1);
    if (n > remaining()) n = remaining();
    std::string s(reinterpret_cast<const char*>(data_ + at_), n);
    at_ += n;
    return s;
  }
  std::span<const std::uint8_t> rest() {
    std::span<const std::uint8_t> s(data_ + at_, remaining());
    at_ = size_;
    return s;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

}  // namespace llmd::fuzz

// A property every input must keep; `detail` (anything convertible to std::string) says what was seen.
#define FUZZ_CHECK(condition, detail)                                             \
  do {                                                                            \
    if (!(condition)) ::llmd::fuzz::fail(__FILE__, __LINE__, #condition, (detail)); \
  } while (0)
