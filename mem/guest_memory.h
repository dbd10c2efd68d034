// Guest physical memory as the VMM lays it out: memslots mapping GPA ranges to host memory.
// Every access is bounds and overflow checked. The layout (slots) can change at run time;
// accessors hold a LayoutGuard so a translation can't go stale between two accesses.
//
// Threads: any. Locks: writers_mutex_ serialises layout changes (a leaf: taken with no other
// lock held, and never under a LayoutGuard). Readers hold a LayoutGuard (layout_guard.h), not a
// mutex: they announce themselves in a record of their own thread and never block while holding
// it; a layout change raises writer_active_, then waits until no reader record names this
// memory. Functions that need a guard held say so with "Guarded" in their name.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "mem/dirty_bitmap.h"
#include "mem/layout_guard.h"

namespace xenkvm::mem {

class GuestMemory {
 public:
  // RAM, plus one slot per Xen page the guest may place outside RAM (shared_info, up to 64
  // grant frames, the console and xenstore rings).
  static constexpr uint32_t kMaxSlots = 96;

  // ---- layout (blocking; any thread; bumps generation()) ----
  // host must stay valid until the slot is removed and the call returned.
  Result<> AddSlot(uint32_t slot, uint64_t gpa, uint64_t size, void* host);
  Result<> RemoveSlot(uint32_t slot);
  Result<> MoveSlot(uint32_t slot, uint64_t new_gpa);
  // A layout change that changes nothing: returns once every LayoutGuard taken before the call
  // has been released, so no thread still uses a translation it made earlier. Invalidates all
  // cached mappings like any layout change.
  void WaitForReaders();

  // Changes on every layout change; a translation made under generation G is valid while
  // generation() == G, checked under a LayoutGuard.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // ---- live migration (any thread but a layout changer's) ----
  // While `bitmap` is set, every page it covers (numbered by GPA from 0: the RAM slot) that a
  // translation hands out is marked in it: the VMM may write through that pointer, and KVM's
  // dirty log only sees the guest's own writes. Setting it also invalidates every cached
  // mapping (a layout change that changes nothing), so pointers kept from before are translated
  // again, and marked. Passing nullptr stops; either call returns once no translation still
  // uses the previous bitmap, which must live until then.
  void TrackTranslations(DirtyBitmap* bitmap);
  // For writes that bypass translation (madvise(MADV_DONTNEED) of ballooned RAM): recorded in
  // the tracked bitmap, if any.
  void NoteHostWrite(uint64_t gpa, uint64_t len);

  // ---- translation: caller holds a LayoutGuard on this memory ----
  // Host address of [gpa, gpa+len) if it lies inside one slot, else -EFAULT.
  Result<uint8_t*> TranslateGuarded(uint64_t gpa, uint64_t len) const;

  // ---- convenience accessors: take the guard themselves (may wait for a layout change) ----
  Result<> Read(uint64_t gpa, std::span<std::byte> out) const;
  Result<> Write(uint64_t gpa, std::span<const std::byte> in);
  template <class T>
  Result<T> ReadObj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    TRY(Read(gpa, std::as_writable_bytes(std::span(&value, 1))));
    return value;
  }
  template <class T>
  Result<> WriteObj(uint64_t gpa, const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(gpa, std::as_bytes(std::span(&value, 1)));
  }

 private:
  friend class LayoutGuard;
  struct Slot {
    bool used = false;
    uint64_t gpa = 0;
    uint64_t size = 0;
    uint8_t* host = nullptr;
  };
  class LayoutChange;  // RAII writer side

  bool Overlaps(uint64_t gpa, uint64_t size, uint32_t except_slot) const
      XENKVM_REQUIRES(writers_mutex_);

  Mutex writers_mutex_;                             // serialises layout changes
  mutable std::atomic<uint32_t> writer_active_{0};  // 1 while a layout change is in flight
  std::atomic<uint64_t> generation_{1};
  // Written only under writers_mutex_ with the writer bit set and no readers; read under a
  // LayoutGuard (which the analysis can't see, so no XENKVM_GUARDED_BY).
  std::array<Slot, kMaxSlots> slots_{};
  std::atomic<DirtyBitmap*> tracked_{nullptr};  // TrackTranslations
};

inline LayoutGuard LayoutGuard::TryAcquire(const GuestMemory& memory) {
  return LayoutGuard(TryAcquireFor(&memory, memory.writer_active_));
}

// Atomic access to naturally aligned guest words through a host pointer obtained under a
// LayoutGuard. Guest memory is shared with guest vCPUs running concurrently.
template <class T>
inline std::atomic_ref<T> GuestAtomic(uint8_t* host) {
  static_assert(std::atomic_ref<T>::is_always_lock_free);
  return std::atomic_ref<T>(*reinterpret_cast<T*>(host));
}

// Whether a guest page (abi::kPageSize bytes) is all zero: snapshots and migration skip such
// pages, since a new machine's RAM starts zero.
inline bool IsZeroPage(const uint8_t* page) {
  uint64_t acc = 0;
  for (size_t i = 0; i < abi::kPageSize; i += 8) {
    uint64_t w;
    std::memcpy(&w, page + i, 8);
    acc |= w;
  }
  return acc == 0;
}

}  // namespace xenkvm::mem
