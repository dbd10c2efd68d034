// One domain's grant table, version 1 (xen/include/public/grant_table.h; semantics of Xen's
// xen/common/grant_table.c): the shared frames the guest fills with grant_entry_v1 entries,
// their placement in the guest's physmap, and the backend side that maps or copies a granted
// page with Xen's checks and its GTF_reading/GTF_writing cmpxchg protocol.
//
// Version 2 is refused as a Xen whose domain was created with max grant version 1
// (`gnttab=max-ver:1`): GNTTABOP_set_version(2) is -ENOSYS, XENMAPIDX_grant_table_status is
// -EINVAL. The entries live in guest memory and are hostile input: every access is an atomic on
// a naturally aligned word, every update a bounded cmpxchg loop, and pins are bounded.
//
// Threads: any (backends map and copy from I/O threads, vCPUs run the hypercalls).
// Lock: mutex_ guards the frame placement and the active (pinned) entries. Lock order:
// Domain::mutex_ -> GrantTable::mutex_ -> GuestMemory layout guard.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "mem/guest_memory.h"

namespace xenkvm::xen {

class GrantTable;

// A granted page mapped for a backend; unmapping (destruction) drops the pin and clears
// GTF_writing / GTF_reading in the guest's entry as Xen does at unmap. Move-only.
class GrantMapping {
 public:
  GrantMapping() = default;
  GrantMapping(GrantMapping&& other) noexcept { *this = std::move(other); }
  GrantMapping& operator=(GrantMapping&& other) noexcept;
  ~GrantMapping() { Reset(); }

  // The granted page (4096 bytes), guest-shared: the guest may change it at any time.
  std::span<std::byte> data() const { return data_; }
  bool readonly() const { return readonly_; }
  uint64_t gfn() const { return gfn_; }
  void Reset();

 private:
  friend class GrantTable;
  GrantTable* table_ = nullptr;
  uint32_t ref_ = 0;
  bool readonly_ = true;
  uint64_t gfn_ = 0;
  std::span<std::byte> data_;
};

class GrantTable {
 public:
  static constexpr uint32_t kEntriesPerFrame = abi::kPageSize / sizeof(grant_entry_v1_t);  // 512
  static constexpr uint32_t kDefaultMaxFrames = 64;  // Xen's default max_grant_frames
  static constexpr uint64_t kNoGfn = UINT64_MAX;
  static constexpr uint32_t kMaxPins = 127;  // per entry and kind, like Xen's 8-bit pin fields

  // is_ram(gfn): the gfn is guest RAM with a page behind it now (a granted frame must be).
  GrantTable(mem::GuestMemory& memory, std::function<bool(uint64_t gfn)> is_ram,
             uint32_t max_frames = kDefaultMaxFrames);

  // ---- frames ----
  uint32_t nr_frames() const;
  uint32_t max_frames() const { return max_frames_; }
  // GNTTABOP_setup_table's growth: false if beyond max_frames (GNTST_general_error).
  bool Grow(uint32_t nr_frames);
  // Where frame idx is mapped in the guest's physmap, or kNoGfn.
  uint64_t FrameGfn(uint32_t idx) const;
  // XENMAPSPACE_grant_table placed frame idx (< max_frames) at gfn (the caller placed the page
  // and moved its contents); grows the table to idx + 1. Returns the frame's previous gfn.
  uint64_t SetFrameGfn(uint32_t idx, uint64_t gfn);
  // Which frame sits at gfn, if any (-1 if none).
  int FrameAt(uint64_t gfn) const;
  // Guest pages a backend has mapped now: Xen holds a reference on them, so ballooning them
  // out must not take their memory.
  std::vector<uint64_t> MappedGfns() const;

  // ---- backends (any thread) ----
  // Map grant `ref` for domain `mapping_domid` (the backend's, 0 for the VMM): the entry must
  // say GTF_permit_access for that domain, and not GTF_readonly for a writable map. Errors
  // (Xen's GNTST_* in GrantStatus()): bad ref -EINVAL, refused entry -EPERM, entry the guest
  // keeps changing -EBUSY, frame not RAM -EFAULT, too many pins -ENOSPC.
  Result<GrantMapping> Map(uint16_t mapping_domid, uint32_t ref, bool readonly);
  // GNTTABOP_copy with one side a granted page: [offset, offset + size) inside the page
  // (-ERANGE otherwise).
  Result<> CopyFrom(uint16_t mapping_domid, uint32_t ref, uint32_t offset,
                    std::span<std::byte> out);
  Result<> CopyTo(uint16_t mapping_domid, uint32_t ref, uint32_t offset,
                  std::span<const std::byte> in);
  // The GNTST_* status Xen would report for an error of Map/CopyFrom/CopyTo.
  static int16_t GrantStatus(const Error& error);

 private:
  friend class GrantMapping;
  struct Active {
    uint64_t gfn = 0;
    uint32_t readers = 0;  // read-only pins
    uint32_t writers = 0;  // writable pins
  };
  // Host address of entry `ref`'s flags+domid word; caller holds a LayoutGuard.
  Result<uint8_t*> EntryLocked(uint32_t ref) const XENKVM_REQUIRES(mutex_);
  void Unmap(uint32_t ref, bool readonly);

  mem::GuestMemory& memory_;
  const std::function<bool(uint64_t)> is_ram_;
  const uint32_t max_frames_;
  mutable Mutex mutex_;
  uint32_t nr_frames_ XENKVM_GUARDED_BY(mutex_) = 1;  // Xen starts with INITIAL_NR_GRANT_FRAMES
  std::array<uint64_t, kDefaultMaxFrames> frame_gfns_ XENKVM_GUARDED_BY(mutex_);
  std::map<uint32_t, Active> active_ XENKVM_GUARDED_BY(mutex_);  // pinned entries by ref
};

}  // namespace xenkvm::xen
