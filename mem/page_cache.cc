// CachedMapping: seqcount-protected cached translation (see page_cache.h).
#include "mem/page_cache.h"

namespace xenkvm::mem {

void CachedMapping::Store(uint64_t gpa, uint8_t* host, uint64_t generation) {
  // Fence-free seqcount: a reader that sees any of the new fields (release stores after the
  // odd count) is guaranteed to see the count change when it re-reads it.
  uint32_t seq = seq_.load(std::memory_order_relaxed);
  seq_.store(seq + 1, std::memory_order_relaxed);
  gpa_.store(gpa, std::memory_order_release);
  host_.store(host, std::memory_order_release);
  generation_.store(generation, std::memory_order_release);
  seq_.store(seq + 2, std::memory_order_release);
}

void CachedMapping::SetGpa(uint64_t gpa) {
  MutexLock lock(update_mutex_);
  Store(gpa, nullptr, 0);
}

Result<uint8_t*> CachedMapping::Refresh(const GuestMemory& memory) {
  MutexLock lock(update_mutex_);
  return RefreshLocked(memory);
}

uint8_t* CachedMapping::TryRefresh(const GuestMemory& memory) {
  if (!update_mutex_.try_lock()) return nullptr;
  uint8_t* host = RefreshLocked(memory).value_or(nullptr);
  update_mutex_.unlock();
  return host;
}

Result<uint8_t*> CachedMapping::RefreshLocked(const GuestMemory& memory) {
  uint64_t gpa = gpa_.load(std::memory_order_relaxed);
  if (gpa == kNoGpa) return Fail(XEN_ENOENT, "no guest address set");
  uint64_t generation = memory.generation();
  auto host = memory.TranslateGuarded(gpa, length_);
  Store(gpa, host ? *host : nullptr, host ? generation : 0);
  return host;
}

}  // namespace xenkvm::mem
