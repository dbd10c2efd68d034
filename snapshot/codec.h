// The byte codec every component's snapshot state is written with: little-endian integers,
// length-prefixed byte strings, nothing else. Encoder appends; Decoder reads a hostile buffer
// with every read bounds-checked. Decoder errors are sticky: after the first failure every read
// returns zero and Finish() reports the first error, so a component's Restore can read its
// fields in a row and check once (then validate what the values mean).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "abi/result.h"

namespace xenkvm::snapshot {

// A hostile or unusable snapshot: one clear line for the CLI (Describe prints it as is).
inline tl::unexpected<Error> Corrupt(const char* what) {
  return tl::unexpected<Error>(Error{XEN_EINVAL, what, 0, ErrorKind::kUsage});
}

class Encoder {
 public:
  void U8(uint8_t v) { bytes_.push_back(std::byte{v}); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  // u32 length, then the bytes.
  void Bytes(std::span<const std::byte> data);
  void String(std::string_view s);
  // Raw bytes, no length (fixed-size fields such as a page or a register block).
  void Raw(std::span<const std::byte> data);
  template <class T>
  void Pod(const T& v) {
    Raw(std::as_bytes(std::span<const T>(&v, 1)));
  }

  const std::vector<std::byte>& bytes() const { return bytes_; }
  std::vector<std::byte> Take() { return std::move(bytes_); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(std::byte(v >> (8 * i)));
  }
  std::vector<std::byte> bytes_;
};

class Decoder {
 public:
  explicit Decoder(std::span<const std::byte> data) : data_(data) {}

  uint8_t U8() { return uint8_t(Le(1)); }
  // Anything but 0 or 1 is corrupt.
  bool Bool();
  uint16_t U16() { return uint16_t(Le(2)); }
  uint32_t U32() { return uint32_t(Le(4)); }
  uint64_t U64() { return Le(8); }
  // A length-prefixed byte string of at most max_len bytes.
  std::vector<std::byte> Bytes(size_t max_len);
  std::string String(size_t max_len);
  // Exactly out.size() bytes.
  void Raw(std::span<std::byte> out);
  template <class T>
  T Pod() {
    T v{};
    Raw(std::as_writable_bytes(std::span<T>(&v, 1)));
    return v;
  }
  // A count of items that each take at least min_item_bytes: more than the rest of the buffer
  // could hold, or more than max_count, is corrupt (so a hostile count never sizes a vector).
  uint32_t Count(uint32_t max_count, size_t min_item_bytes = 1);

  // Marks the input corrupt with `what` (for a component's own value checks); the first wins.
  void Invalid(const char* what);
  bool ok() const { return error_ == nullptr; }
  size_t remaining() const { return data_.size() - pos_; }
  // The first error, or one for bytes left over.
  Result<> Finish() const;

 private:
  uint64_t Le(int n);
  std::span<const std::byte> data_;
  size_t pos_ = 0;
  const char* error_ = nullptr;
};

}  // namespace xenkvm::snapshot
