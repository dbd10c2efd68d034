// Grant table v1; see grants.h. The pin protocol follows Xen's _set_status_v1 and
// unmap_common_complete: first pin checks the entry and sets GTF_reading (and GTF_writing)
// with a cmpxchg retried at most 5 times; the last pin of a kind clears its flag.
#include "xen/grants.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

namespace xenkvm::xen {

namespace {
constexpr int kCmpxchgTries = 5;  // Xen gives up after the 5th failed cmpxchg

// grant_entry_v1's first word: flags in bits 15:0, domid in 31:16 (little endian).
uint16_t FlagsOf(uint32_t combo) { return static_cast<uint16_t>(combo & 0xffff); }
uint16_t DomidOf(uint32_t combo) { return static_cast<uint16_t>(combo >> 16); }
static_assert(offsetof(grant_entry_v1_t, flags) == 0 && offsetof(grant_entry_v1_t, domid) == 2 &&
              offsetof(grant_entry_v1_t, frame) == 4);
}  // namespace

GrantMapping& GrantMapping::operator=(GrantMapping&& other) noexcept {
  if (this != &other) {
    Reset();
    table_ = std::exchange(other.table_, nullptr);
    ref_ = other.ref_;
    readonly_ = other.readonly_;
    gfn_ = other.gfn_;
    data_ = std::exchange(other.data_, {});
  }
  return *this;
}

void GrantMapping::Reset() {
  if (table_ == nullptr) return;
  std::exchange(table_, nullptr)->Unmap(ref_, readonly_);
  data_ = {};
}

GrantTable::GrantTable(mem::GuestMemory& memory, std::function<bool(uint64_t)> is_ram,
                       uint32_t max_frames)
    : memory_(memory),
      is_ram_(std::move(is_ram)),
      max_frames_(std::clamp<uint32_t>(max_frames, 1, kDefaultMaxFrames)) {
  frame_gfns_.fill(kNoGfn);
}

uint32_t GrantTable::nr_frames() const {
  MutexLock lock(mutex_);
  return nr_frames_;
}

bool GrantTable::Grow(uint32_t nr_frames) {
  if (nr_frames > max_frames_) return false;
  MutexLock lock(mutex_);
  nr_frames_ = std::max(nr_frames_, nr_frames);
  return true;
}

uint64_t GrantTable::FrameGfn(uint32_t idx) const {
  MutexLock lock(mutex_);
  return idx < frame_gfns_.size() ? frame_gfns_[idx] : kNoGfn;
}

uint64_t GrantTable::SetFrameGfn(uint32_t idx, uint64_t gfn) {
  MutexLock lock(mutex_);
  if (idx >= max_frames_) return kNoGfn;
  nr_frames_ = std::max(nr_frames_, idx + 1);
  return std::exchange(frame_gfns_[idx], gfn);
}

int GrantTable::FrameAt(uint64_t gfn) const {
  MutexLock lock(mutex_);
  for (uint32_t i = 0; i < max_frames_; ++i) {
    if (frame_gfns_[i] == gfn) return static_cast<int>(i);
  }
  return -1;
}

std::vector<uint64_t> GrantTable::MappedGfns() const {
  MutexLock lock(mutex_);
  std::vector<uint64_t> gfns;
  for (const auto& [ref, active] : active_) gfns.push_back(active.gfn);
  return gfns;
}

Result<uint8_t*> GrantTable::EntryLocked(uint32_t ref) const {
  if (ref / kEntriesPerFrame >= nr_frames_) return Fail(XEN_EINVAL, "grant ref beyond the table");
  const uint64_t gfn = frame_gfns_[ref / kEntriesPerFrame];
  // A frame the guest never mapped holds no entries it could have written: all invalid.
  if (gfn == kNoGfn) return Fail(XEN_EPERM, "grant frame not mapped by the guest");
  return memory_.TranslateGuarded((gfn << 12) + (ref % kEntriesPerFrame) * sizeof(grant_entry_v1_t),
                                  sizeof(grant_entry_v1_t));
}

Result<GrantMapping> GrantTable::Map(uint16_t mapping_domid, uint32_t ref, bool readonly) {
  MutexLock lock(mutex_);
  auto guard = mem::LayoutGuard::Acquire(memory_);
  uint8_t* entry = TRY(EntryLocked(ref));
  auto found = active_.find(ref);
  const bool pinned = found != active_.end();
  if (pinned && (readonly ? found->second.readers : found->second.writers) >= kMaxPins) {
    return Fail(XEN_ENOSPC, "grant entry pinned too often");
  }
  // Only the first pin checks flags and domid; a first writable pin also checks GTF_readonly
  // and sets GTF_writing. Later pins reuse the frame read at the first.
  if (!pinned || (!readonly && found->second.writers == 0)) {
    auto combo_ref = mem::GuestAtomic<uint32_t>(entry);
    uint32_t combo = combo_ref.load(std::memory_order_acquire);
    for (int tries = 0;; ++tries) {
      const uint16_t flags = FlagsOf(combo);
      if (!pinned &&
          ((flags & GTF_type_mask) != GTF_permit_access || DomidOf(combo) != mapping_domid)) {
        return Fail(XEN_EPERM, "grant entry does not permit access to this domain");
      }
      uint32_t wanted = combo | GTF_reading;
      if (!readonly) {
        if (flags & GTF_readonly) return Fail(XEN_EPERM, "writable map of a read-only grant");
        wanted |= GTF_writing;
      }
      if (combo_ref.compare_exchange_strong(combo, wanted, std::memory_order_acq_rel)) break;
      if (tries + 1 == kCmpxchgTries) return Fail(XEN_EBUSY, "grant entry is unstable");
    }
  }
  uint64_t gfn;
  if (pinned) {
    gfn = found->second.gfn;
  } else {
    gfn = mem::GuestAtomic<uint32_t>(entry + offsetof(grant_entry_v1_t, frame))
              .load(std::memory_order_acquire);
  }
  // The frame must be guest RAM with a page now; host pointers into RAM stay valid for the
  // machine's life (the RAM slot never moves; ballooning zeroes pages but keeps them mapped).
  Result<uint8_t*> host = is_ram_(gfn) ? memory_.TranslateGuarded(gfn << 12, abi::kPageSize)
                                       : Fail(XEN_EFAULT, "granted frame is not guest RAM");
  if (!host) {
    if (!pinned) {
      // Undo our flags as Xen's error path does (clear what no other pin needs).
      auto flags_ref = mem::GuestAtomic<uint16_t>(entry);
      flags_ref.fetch_and(static_cast<uint16_t>(~(GTF_reading | GTF_writing)),
                          std::memory_order_acq_rel);
    } else if (!readonly && found->second.writers == 0) {
      mem::GuestAtomic<uint16_t>(entry).fetch_and(static_cast<uint16_t>(~GTF_writing),
                                                  std::memory_order_acq_rel);
    }
    return tl::unexpected(host.error());
  }
  Active& active = active_[ref];
  active.gfn = gfn;
  ++(readonly ? active.readers : active.writers);
  GrantMapping mapping;
  mapping.table_ = this;
  mapping.ref_ = ref;
  mapping.readonly_ = readonly;
  mapping.gfn_ = gfn;
  mapping.data_ = std::span(reinterpret_cast<std::byte*>(*host), abi::kPageSize);
  return mapping;
}

void GrantTable::Unmap(uint32_t ref, bool readonly) {
  MutexLock lock(mutex_);
  auto found = active_.find(ref);
  if (found == active_.end()) return;  // unreachable: every mapping holds a pin
  Active& active = found->second;
  --(readonly ? active.readers : active.writers);
  uint16_t clear = 0;
  if (active.writers == 0) clear |= GTF_writing;
  if (active.readers == 0 && active.writers == 0) {
    clear |= GTF_reading;
    active_.erase(found);
  }
  auto guard = mem::LayoutGuard::Acquire(memory_);
  // The frame may have moved or gone since: then the flags live wherever the guest put it now,
  // or nowhere; Xen clears them in its own page, which always exists.
  if (auto entry = EntryLocked(ref)) {
    mem::GuestAtomic<uint16_t>(*entry).fetch_and(static_cast<uint16_t>(~clear),
                                                 std::memory_order_acq_rel);
  }
}

Result<> GrantTable::CopyFrom(uint16_t mapping_domid, uint32_t ref, uint32_t offset,
                              std::span<std::byte> out) {
  if (offset > abi::kPageSize || out.size() > abi::kPageSize - offset)
    return Fail(XEN_ERANGE, "grant copy beyond page");
  GrantMapping m = TRY(Map(mapping_domid, ref, /*readonly=*/true));
  std::memcpy(out.data(), m.data().data() + offset, out.size());
  return {};
}

Result<> GrantTable::CopyTo(uint16_t mapping_domid, uint32_t ref, uint32_t offset,
                            std::span<const std::byte> in) {
  if (offset > abi::kPageSize || in.size() > abi::kPageSize - offset)
    return Fail(XEN_ERANGE, "grant copy beyond page");
  GrantMapping m = TRY(Map(mapping_domid, ref, /*readonly=*/false));
  std::memcpy(m.data().data() + offset, in.data(), in.size());
  return {};
}

int16_t GrantTable::GrantStatus(const Error& error) {
  switch (error.xen_errno) {
    case XEN_EINVAL:
      return GNTST_bad_gntref;
    case XEN_EFAULT:
      return GNTST_bad_page;
    case XEN_ERANGE:
      return GNTST_bad_copy_arg;
    case XEN_ENOSPC:
      return GNTST_no_device_space;
    default:
      return GNTST_general_error;  // refused or unstable entry, as Xen reports them
  }
}

}  // namespace xenkvm::xen
