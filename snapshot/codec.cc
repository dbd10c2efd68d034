// The snapshot byte codec (see codec.h).
#include "snapshot/codec.h"

#include <cstring>

namespace xenkvm::snapshot {

void Encoder::Bytes(std::span<const std::byte> data) {
  U32(uint32_t(data.size()));
  Raw(data);
}

void Encoder::String(std::string_view s) { Bytes(std::as_bytes(std::span(s.data(), s.size()))); }

void Encoder::Raw(std::span<const std::byte> data) {
  bytes_.insert(bytes_.end(), data.begin(), data.end());
}

uint64_t Decoder::Le(int n) {
  if (error_ || remaining() < size_t(n)) {
    Invalid("snapshot section is truncated");
    return 0;
  }
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(data_[pos_ + i]) << (8 * i);
  pos_ += size_t(n);
  return v;
}

bool Decoder::Bool() {
  const uint8_t v = U8();
  if (v > 1) Invalid("snapshot holds a bad boolean");
  return v == 1;
}

std::vector<std::byte> Decoder::Bytes(size_t max_len) {
  const uint32_t len = U32();
  if (len > max_len || len > remaining()) {
    Invalid("snapshot holds an oversized string");
    return {};
  }
  std::vector<std::byte> out(data_.begin() + pos_, data_.begin() + pos_ + len);
  pos_ += len;
  return out;
}

std::string Decoder::String(size_t max_len) {
  std::vector<std::byte> bytes = Bytes(max_len);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void Decoder::Raw(std::span<std::byte> out) {
  if (error_ || remaining() < out.size()) {
    Invalid("snapshot section is truncated");
    std::memset(out.data(), 0, out.size());
    return;
  }
  std::memcpy(out.data(), data_.data() + pos_, out.size());
  pos_ += out.size();
}

uint32_t Decoder::Count(uint32_t max_count, size_t min_item_bytes) {
  const uint32_t n = U32();
  if (n > max_count || (min_item_bytes != 0 && n > remaining() / min_item_bytes)) {
    Invalid("snapshot holds an impossible count");
    return 0;
  }
  return n;
}

void Decoder::Invalid(const char* what) {
  if (!error_) error_ = what;
}

Result<> Decoder::Finish() const {
  if (error_) return Corrupt(error_);
  if (remaining() != 0) return Corrupt("snapshot section has trailing bytes");
  return {};
}

}  // namespace xenkvm::snapshot
