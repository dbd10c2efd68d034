// A cached GPA -> host translation for one page the engine writes (shared_info, a vcpu_info):
// the analogue of KVM's gfn_to_pfn_cache. A translation is valid only while the memory layout
// generation it was made under still holds; a layout change invalidates it at once.
//
// Threads: Get() from any thread, O(1), never blocks (a seqcount guards the cached fields).
// SetGpa()/Refresh() may block; they and TryRefresh() are serialised by update_mutex_ (a leaf;
// Refresh and TryRefresh run under the caller's LayoutGuard, which is not a mutex).
#pragma once

#include <atomic>
#include <cstdint>

#include "abi/sync.h"
#include "mem/guest_memory.h"

namespace xenkvm::mem {

class CachedMapping {
 public:
  static constexpr uint64_t kNoGpa = UINT64_MAX;

  explicit CachedMapping(uint32_t length) : length_(length) {}

  // Points the cache at a new GPA (or kNoGpa) and drops the old translation.
  void SetGpa(uint64_t gpa);
  uint64_t gpa() const { return gpa_.load(std::memory_order_acquire); }

  // Host address of the page if the cached translation is current. The caller must hold a
  // LayoutGuard on `memory` for as long as it uses the address.
  uint8_t* Get(const GuestMemory& memory) const {
    uint32_t seq = seq_.load(std::memory_order_acquire);
    if (seq & 1) return nullptr;
    uint8_t* host = host_.load(std::memory_order_acquire);
    uint64_t generation = generation_.load(std::memory_order_acquire);
    if (seq_.load(std::memory_order_relaxed) != seq) return nullptr;
    if (host == nullptr || generation != memory.generation()) return nullptr;
    return host;
  }

  // Translate again under the caller's LayoutGuard; -ENOENT if no GPA is set, -EFAULT if the
  // GPA is not backed in the current layout.
  Result<uint8_t*> Refresh(const GuestMemory& memory);

  // Refresh without blocking: nullptr if another thread is updating the cache right now or
  // the GPA is unset or unbacked. Caller holds a LayoutGuard.
  uint8_t* TryRefresh(const GuestMemory& memory);

 private:
  void Store(uint64_t gpa, uint8_t* host, uint64_t generation) XENKVM_REQUIRES(update_mutex_);
  Result<uint8_t*> RefreshLocked(const GuestMemory& memory) XENKVM_REQUIRES(update_mutex_);

  const uint32_t length_;
  // Serialises writers of the fields below; readers use the seqcount instead, so the fields
  // are atomics and not XENKVM_GUARDED_BY.
  Mutex update_mutex_;
  std::atomic<uint32_t> seq_{0};  // odd while an update is in progress
  std::atomic<uint64_t> gpa_{kNoGpa};
  std::atomic<uint8_t*> host_{nullptr};
  std::atomic<uint64_t> generation_{0};  // 0 never matches: GuestMemory starts at 1
};

}  // namespace xenkvm::mem
