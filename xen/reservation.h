// The domain's memory reservation as Xen keeps it for a translated (HVM/PVH) guest: which RAM
// gfns are ballooned out (XENMEM_decrease_reservation left a hole there), how many pages the
// domain holds (tot_pages: XENMEM_current_reservation) and may hold (max_pages:
// XENMEM_maximum_reservation). Bookkeeping only; xen::Domain applies Xen's rules around it.
//
// Threads: IsHole from any thread, lock-free (hypercall argument copies check it). Everything
// else is called with Domain::mutex_ held.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

namespace xenkvm::xen {

// Xen-internal (xen/include/xen/hypercall.h MEMOP_EXTENT_SHIFT): memory_op's cmd carries the
// sub-op in its low 6 bits and, above them, the extent a preempted reservation op continues
// from; nr_extents is capped so that any extent index still fits there.
inline constexpr unsigned kMemopExtentShift = 6;

class Reservation {
 public:
  // Every gfn below ram_pages starts populated, and max_pages = tot_pages = ram_pages.
  explicit Reservation(uint64_t ram_pages);

  uint64_t ram_pages() const { return ram_pages_; }
  // [gfn, gfn + count) lies inside guest RAM (overflow-safe).
  bool InRam(uint64_t gfn, uint64_t count) const {
    return gfn < ram_pages_ && count <= ram_pages_ - gfn;
  }
  // gfn is RAM that was ballooned out and not populated since. Any thread.
  bool IsHole(uint64_t gfn) const;

  uint64_t tot_pages() const { return ram_pages_ - holes_ + unmapped_; }
  uint64_t max_pages() const { return ram_pages_; }
  // Whether the domain may be given `count` more pages (Xen's max_pages check on allocation).
  bool CanAllocate(uint64_t count) const {
    return count <= max_pages() - std::min(max_pages(), tot_pages());
  }

  // A populated RAM page leaves the physmap; the domain holds one page less.
  void MakeHole(uint64_t gfn);
  // A hole gets a page again (populate_physmap, or a Xen page such as shared_info mapped there).
  void Fill(uint64_t gfn);
  // Pages the domain holds that no gfn shows: increase_reservation's extents (a translated guest
  // learns no address for them) and pages that populate_physmap replaced.
  void AddUnmapped(uint64_t count) { unmapped_ += count; }

 private:
  static constexpr uint64_t kBits = 64;
  const uint64_t ram_pages_;
  std::unique_ptr<std::atomic<uint64_t>[]> hole_bits_;
  uint64_t holes_ = 0;     // set bits in hole_bits_
  uint64_t unmapped_ = 0;  // see AddUnmapped
};

}  // namespace xenkvm::xen
