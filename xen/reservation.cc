// Ballooned-out gfn bitmap and page counts; see reservation.h.
#include "xen/reservation.h"

#include <cassert>

namespace xenkvm::xen {

Reservation::Reservation(uint64_t ram_pages)
    : ram_pages_(ram_pages),
      hole_bits_(new std::atomic<uint64_t>[(ram_pages + kBits - 1) / kBits]()) {}

bool Reservation::IsHole(uint64_t gfn) const {
  if (gfn >= ram_pages_) return false;
  return (hole_bits_[gfn / kBits].load(std::memory_order_acquire) >> (gfn % kBits)) & 1;
}

void Reservation::MakeHole(uint64_t gfn) {
  assert(InRam(gfn, 1) && !IsHole(gfn));
  hole_bits_[gfn / kBits].fetch_or(uint64_t{1} << (gfn % kBits), std::memory_order_acq_rel);
  ++holes_;
}

void Reservation::Fill(uint64_t gfn) {
  assert(InRam(gfn, 1) && IsHole(gfn));
  hole_bits_[gfn / kBits].fetch_and(~(uint64_t{1} << (gfn % kBits)), std::memory_order_acq_rel);
  --holes_;
}

}  // namespace xenkvm::xen
