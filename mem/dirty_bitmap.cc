// A page bitmap in KVM's dirty-log layout; see dirty_bitmap.h.
#include "mem/dirty_bitmap.h"

#include <algorithm>
#include <bit>

#include "abi/xen.h"

namespace xenkvm::mem {

DirtyBitmap::DirtyBitmap(uint64_t pages)
    : pages_(pages),
      words_(size_t((pages + 63) / 64)),
      bits_(std::make_unique<std::atomic<uint64_t>[]>(words_)) {
  Clear();
}

void DirtyBitmap::Mark(uint64_t page) {
  if (page >= pages_) return;
  bits_[page / 64].fetch_or(uint64_t{1} << (page % 64), std::memory_order_relaxed);
}

void DirtyBitmap::MarkBytes(uint64_t addr, uint64_t len) {
  if (len == 0 || addr / abi::kPageSize >= pages_) return;
  const uint64_t first = addr / abi::kPageSize;
  // The caller checked that the range does not wrap; clamp to the bitmap anyway.
  const uint64_t last = std::min((addr + (len - 1)) / abi::kPageSize, pages_ - 1);
  for (uint64_t page = first; page <= last; ++page) Mark(page);
}

bool DirtyBitmap::Test(uint64_t page) const {
  return page < pages_ &&
         (bits_[page / 64].load(std::memory_order_relaxed) >> (page % 64) & 1) != 0;
}

uint64_t DirtyBitmap::Count() const {
  uint64_t n = 0;
  for (size_t i = 0; i < words_; ++i) n += uint64_t(std::popcount(bits_[i].load()));
  return n;
}

void DirtyBitmap::Merge(std::span<const uint64_t> words) {
  const size_t n = std::min(words.size(), words_);
  for (size_t i = 0; i < n; ++i) {
    uint64_t w = words[i];
    if (i == words_ - 1 && pages_ % 64 != 0) w &= (uint64_t{1} << (pages_ % 64)) - 1;
    if (w != 0) bits_[i].fetch_or(w, std::memory_order_relaxed);
  }
}

void DirtyBitmap::Merge(const DirtyBitmap& other) {
  const size_t n = std::min(other.words_, words_);
  std::vector<uint64_t> words(n);
  for (size_t i = 0; i < n; ++i) words[i] = other.bits_[i].load(std::memory_order_relaxed);
  Merge(words);
}

void DirtyBitmap::Clear() {
  for (size_t i = 0; i < words_; ++i) bits_[i].store(0, std::memory_order_relaxed);
}

std::vector<uint64_t> DirtyBitmap::SetPages() const {
  std::vector<uint64_t> out;
  for (size_t i = 0; i < words_; ++i) {
    for (uint64_t w = bits_[i].load(std::memory_order_relaxed); w != 0; w &= w - 1)
      out.push_back(uint64_t(i) * 64 + uint64_t(std::countr_zero(w)));
  }
  return out;
}

}  // namespace xenkvm::mem
