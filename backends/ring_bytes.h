// Byte rings shared with a guest (the shape of xen/include/public/io/console.h and xs_wire.h:
// a power-of-two array, free-running 32-bit producer/consumer indexes). The guest may write any
// index at any time: callers read each index once, check it, then copy.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>

#include "mem/guest_memory.h"

namespace xenkvm::backends {

inline uint32_t LoadIndex(uint32_t* index) {
  return mem::GuestAtomic<uint32_t>(reinterpret_cast<uint8_t*>(index))
      .load(std::memory_order_acquire);  // data written before the index is visible after it
}
inline void StoreIndex(uint32_t* index, uint32_t value) {
  mem::GuestAtomic<uint32_t>(reinterpret_cast<uint8_t*>(index))
      .store(value, std::memory_order_release);  // data before the index
}

// Copies `out.size()` bytes starting at free-running index `from` out of ring `ring`.
inline void CopyFromRing(std::span<const char> ring, uint32_t from, std::span<char> out) {
  const size_t start = from & (ring.size() - 1);
  const size_t first = std::min(out.size(), ring.size() - start);
  std::memcpy(out.data(), ring.data() + start, first);
  std::memcpy(out.data() + first, ring.data(), out.size() - first);
}

inline void CopyToRing(std::span<char> ring, uint32_t to, std::span<const char> in) {
  const size_t start = to & (ring.size() - 1);
  const size_t first = std::min(in.size(), ring.size() - start);
  std::memcpy(ring.data() + start, in.data(), first);
  std::memcpy(ring.data(), in.data() + first, in.size() - first);
}

}  // namespace xenkvm::backends
