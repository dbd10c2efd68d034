// GuestMemory: memslots and bounds-checked GPA -> host translation (see guest_memory.h).
#include "mem/guest_memory.h"

#include <thread>

namespace xenkvm::mem {

// ---- reader/writer word ----
// A reader increments the count and backs out if a writer is announced; the writer announces
// itself first and then waits for the count to drain. Both act on the same atomic word, so
// their read-modify-writes are totally ordered and one of them always sees the other.

bool GuestMemory::TryLockShared() const {
  uint64_t prev = state_.fetch_add(1, std::memory_order_acquire);
  if ((prev & kWriterBit) == 0) return true;
  state_.fetch_sub(1, std::memory_order_release);
  return false;
}

void GuestMemory::LockShared() const {
  while (!TryLockShared()) {
    uint64_t seen = state_.load(std::memory_order_relaxed);
    if (seen & kWriterBit) state_.wait(seen, std::memory_order_relaxed);
  }
}

void GuestMemory::UnlockShared() const {
  uint64_t prev = state_.fetch_sub(1, std::memory_order_release);
  // The last reader out wakes a writer waiting for the count to drain.
  if ((prev & kWriterBit) && (prev & ~kWriterBit) == 1) state_.notify_all();
}

class GuestMemory::LayoutChange {
 public:
  explicit LayoutChange(GuestMemory& memory) : memory_(memory), lock_(memory.writers_) {
    uint64_t seen = memory_.state_.fetch_or(kWriterBit, std::memory_order_acquire) | kWriterBit;
    while (seen != kWriterBit) {
      memory_.state_.wait(seen, std::memory_order_acquire);
      seen = memory_.state_.load(std::memory_order_acquire);
    }
  }
  ~LayoutChange() {
    memory_.generation_.fetch_add(1, std::memory_order_release);
    memory_.state_.fetch_and(~kWriterBit, std::memory_order_release);
    memory_.state_.notify_all();
  }

 private:
  GuestMemory& memory_;
  std::lock_guard<std::mutex> lock_;
};

LayoutGuard LayoutGuard::TryAcquire(const GuestMemory& memory) {
  return LayoutGuard(memory.TryLockShared() ? &memory : nullptr);
}

LayoutGuard LayoutGuard::Acquire(const GuestMemory& memory) {
  memory.LockShared();
  return LayoutGuard(&memory);
}

LayoutGuard::~LayoutGuard() {
  if (memory_) memory_->UnlockShared();
}

// ---- layout ----

bool GuestMemory::OverlapsLocked(uint64_t gpa, uint64_t size, uint32_t except_slot) const {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    const Slot& s = slots_[i];
    if (!s.used || i == except_slot) continue;
    if (gpa < s.gpa + s.size && s.gpa < gpa + size) return true;
  }
  return false;
}

static bool RangeValid(uint64_t gpa, uint64_t size) {
  return size != 0 && gpa + size > gpa && gpa % abi::kPageSize == 0 && size % abi::kPageSize == 0;
}

Result<> GuestMemory::AddSlot(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  if (slot >= kMaxSlots || host == nullptr || !RangeValid(gpa, size))
    return Fail(XEN_EINVAL, "bad memslot");
  LayoutChange change(*this);
  if (slots_[slot].used) return Fail(XEN_EEXIST, "memslot in use");
  if (OverlapsLocked(gpa, size, kMaxSlots)) return Fail(XEN_EEXIST, "memslot overlaps");
  slots_[slot] = Slot{true, gpa, size, static_cast<uint8_t*>(host)};
  return {};
}

Result<> GuestMemory::RemoveSlot(uint32_t slot) {
  if (slot >= kMaxSlots) return Fail(XEN_EINVAL, "bad memslot");
  LayoutChange change(*this);
  if (!slots_[slot].used) return Fail(XEN_ENOENT, "memslot not in use");
  slots_[slot] = Slot{};
  return {};
}

Result<> GuestMemory::MoveSlot(uint32_t slot, uint64_t new_gpa) {
  if (slot >= kMaxSlots) return Fail(XEN_EINVAL, "bad memslot");
  LayoutChange change(*this);
  Slot& s = slots_[slot];
  if (!s.used) return Fail(XEN_ENOENT, "memslot not in use");
  if (!RangeValid(new_gpa, s.size)) return Fail(XEN_EINVAL, "bad memslot");
  if (OverlapsLocked(new_gpa, s.size, slot)) return Fail(XEN_EEXIST, "memslot overlaps");
  s.gpa = new_gpa;
  return {};
}

// ---- translation and access ----

Result<uint8_t*> GuestMemory::TranslateLocked(uint64_t gpa, uint64_t len) const {
  if (gpa + len < gpa) return Fail(XEN_EFAULT, "guest range wraps");
  for (const Slot& s : slots_) {
    if (!s.used || gpa < s.gpa) continue;
    uint64_t offset = gpa - s.gpa;
    if (offset < s.size && len <= s.size - offset) return s.host + offset;
  }
  return Fail(XEN_EFAULT, "guest range not backed");
}

Result<> GuestMemory::Read(uint64_t gpa, std::span<std::byte> out) const {
  auto guard = LayoutGuard::Acquire(*this);
  uint8_t* host = TRY(TranslateLocked(gpa, out.size()));
  std::memcpy(out.data(), host, out.size());
  return {};
}

Result<> GuestMemory::Write(uint64_t gpa, std::span<const std::byte> in) {
  auto guard = LayoutGuard::Acquire(*this);
  uint8_t* host = TRY(TranslateLocked(gpa, in.size()));
  std::memcpy(host, in.data(), in.size());
  return {};
}

}  // namespace xenkvm::mem
