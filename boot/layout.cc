// Boot data placement; see layout.h.
#include "boot/layout.h"

#include <algorithm>

namespace xenkvm::boot {

namespace {
bool Overlaps(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len) {
  return a < b + b_len && b < a + a_len;
}
}  // namespace

uint64_t ImageEnd(std::span<const ElfSegment> loads) {
  uint64_t end = 0;
  for (const ElfSegment& s : loads) end = std::max(end, s.paddr + s.memsz);
  return end;
}

Result<uint64_t> PlaceStartInfo(std::span<const ElfSegment> loads, uint64_t area_size,
                                uint64_t ram_size) {
  uint64_t base = kStartInfoLow;
  for (const ElfSegment& s : loads) {
    if (Overlaps(base, area_size, s.paddr, s.memsz)) base = PageAlignUp(ImageEnd(loads));
  }
  if (base > ram_size || area_size > ram_size - base)
    return Fail(XEN_EFAULT, "no room for hvm_start_info");
  return base;
}

Result<uint64_t> PlaceInitrd(uint64_t floor, uint64_t size, uint64_t ram_size,
                             std::span<const hvm_memmap_table_entry> map) {
  const uint64_t limit = std::min(ram_size, kEarlyMapEnd);
  uint64_t best = UINT64_MAX;
  // Callers bound floor and sizes by RAM (< 4 GiB), so none of the sums below can wrap.
  if (floor < limit && size != 0 && size <= limit) {
    for (const hvm_memmap_table_entry& e : map) {
      if (e.type != XEN_HVM_MEMMAP_TYPE_RAM || e.addr >= limit) continue;
      const uint64_t end = std::min(limit, e.addr + std::min(e.size, limit - e.addr));
      const uint64_t start = PageAlignUp(std::max(e.addr, floor));
      if (start < end && size <= end - start) best = std::min(best, start);
    }
  }
  if (best == UINT64_MAX)
    return Fail(XEN_ENOMEM, "the initrd does not fit in guest RAM between the kernel and 1 GiB");
  return best;
}

}  // namespace xenkvm::boot
