// GuestMemory: memslots and bounds-checked GPA -> host translation (see guest_memory.h).
#include "mem/guest_memory.h"

#include <cassert>
#include <thread>

namespace xenkvm::mem {

// ---- the writer side of LayoutGuard ----

class XENKVM_SCOPED_CAPABILITY GuestMemory::LayoutChange {
 public:
  explicit LayoutChange(GuestMemory& memory) XENKVM_ACQUIRE(memory.writers_mutex_)
      : memory_(memory), lock_(memory.writers_mutex_) {
    // Changing the layout while holding a guard on it would wait for ourselves.
    assert(detail::ThisThreadReader().reading.load(std::memory_order_relaxed) != &memory);
    memory_.writer_active_.store(1, std::memory_order_seq_cst);
    WaitForReadersToLeave(&memory_);
  }
  ~LayoutChange() XENKVM_RELEASE() {
    memory_.generation_.fetch_add(1, std::memory_order_release);
    memory_.writer_active_.store(0, std::memory_order_release);
    memory_.writer_active_.notify_all();
  }

 private:
  GuestMemory& memory_;
  MutexLock lock_;
};

LayoutGuard LayoutGuard::Acquire(const GuestMemory& memory) {
  // A thread holding a guard on another memory would spin here forever.
  assert(detail::ThisThreadReader().depth == 0 ||
         detail::ThisThreadReader().reading.load(std::memory_order_relaxed) == &memory);
  for (;;) {
    if (ReaderRecord* record = TryAcquireFor(&memory, memory.writer_active_))
      return LayoutGuard(record);
    memory.writer_active_.wait(1, std::memory_order_acquire);
  }
}

// ---- layout ----

bool GuestMemory::Overlaps(uint64_t gpa, uint64_t size, uint32_t except_slot) const {
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
  if (Overlaps(gpa, size, kMaxSlots)) return Fail(XEN_EEXIST, "memslot overlaps");
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
  if (Overlaps(new_gpa, s.size, slot)) return Fail(XEN_EEXIST, "memslot overlaps");
  s.gpa = new_gpa;
  return {};
}

void GuestMemory::WaitForReaders() { LayoutChange change(*this); }

void GuestMemory::NoteHostWrite(uint64_t gpa, uint64_t len) {
  auto guard = LayoutGuard::Acquire(*this);  // TrackTranslations waits for us
  if (DirtyBitmap* tracked = tracked_.load(std::memory_order_acquire)) tracked->MarkBytes(gpa, len);
}

void GuestMemory::TrackTranslations(DirtyBitmap* bitmap) {
  tracked_.store(bitmap, std::memory_order_release);
  WaitForReaders();
}

// ---- translation and access ----

Result<uint8_t*> GuestMemory::TranslateGuarded(uint64_t gpa, uint64_t len) const {
  if (gpa + len < gpa) return Fail(XEN_EFAULT, "guest range wraps");
  for (const Slot& s : slots_) {
    if (!s.used || gpa < s.gpa) continue;
    uint64_t offset = gpa - s.gpa;
    if (offset < s.size && len <= s.size - offset) {
      if (DirtyBitmap* tracked = tracked_.load(std::memory_order_acquire))
        tracked->MarkBytes(gpa, len);
      return s.host + offset;
    }
  }
  return Fail(XEN_EFAULT, "guest range not backed");
}

Result<> GuestMemory::Read(uint64_t gpa, std::span<std::byte> out) const {
  if (out.empty()) return {};
  auto guard = LayoutGuard::Acquire(*this);
  uint8_t* host = TRY(TranslateGuarded(gpa, out.size()));
  std::memcpy(out.data(), host, out.size());
  return {};
}

Result<> GuestMemory::Write(uint64_t gpa, std::span<const std::byte> in) {
  if (in.empty()) return {};
  auto guard = LayoutGuard::Acquire(*this);
  uint8_t* host = TRY(TranslateGuarded(gpa, in.size()));
  std::memcpy(host, in.data(), in.size());
  return {};
}

}  // namespace xenkvm::mem
