// Guest page-table walker; see page_walk.h.
#include "vmm/page_walk.h"

namespace xenkvm::vmm {

namespace {
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pse = 1ull << 4;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kCr4La57 = 1ull << 12;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint64_t kPresent = 1ull << 0;
constexpr uint64_t kLarge = 1ull << 7;
constexpr uint64_t kAddrMask = 0x000ffffffffff000ull;  // bits 51:12 of a 64-bit entry

// One table entry; page tables live in guest RAM like anything else.
template <class Entry>
Result<uint64_t> ReadEntry(const mem::GuestMemory& memory, uint64_t table, uint64_t index) {
  auto e = memory.ReadObj<Entry>(table + index * sizeof(Entry));
  if (!e) return Fail(XEN_EFAULT, "page table outside RAM");
  if ((*e & kPresent) == 0) return Fail(XEN_EFAULT, "page not present");
  return static_cast<uint64_t>(*e);
}
}  // namespace

Result<uint64_t> WalkPageTables(const mem::GuestMemory& memory, const PagingState& paging, uint64_t gva) {
  if ((paging.cr0 & kCr0Pg) == 0) return gva & 0xffffffffull;  // paging off: 32-bit physical

  if (paging.efer & kEferLma) {
    if (paging.cr4 & kCr4La57) return Fail(XEN_EFAULT, "5-level paging not supported");
    // Canonical: bits 63:47 all equal.
    const int64_t sign = static_cast<int64_t>(gva) >> 47;
    if (sign != 0 && sign != -1) return Fail(XEN_EFAULT, "non-canonical address");
    uint64_t table = paging.cr3 & kAddrMask;
    for (int level = 4; level >= 1; --level) {
      const int shift = 12 + 9 * (level - 1);
      uint64_t e = TRY(ReadEntry<uint64_t>(memory, table, (gva >> shift) & 0x1ff));
      if (level == 1 || ((level == 2 || level == 3) && (e & kLarge))) {
        const uint64_t page_mask = (1ull << shift) - 1;
        return ((e & kAddrMask) & ~page_mask) | (gva & page_mask);
      }
      table = e & kAddrMask;
    }
    return Fail(XEN_EFAULT, "unreachable");
  }

  const uint64_t va = gva & 0xffffffffull;
  if (paging.cr4 & kCr4Pae) {
    // PAE: 4 PDPTEs at CR3 (32-byte aligned), then 2 MiB or 4 KiB pages.
    uint64_t pdpte = TRY(ReadEntry<uint64_t>(memory, paging.cr3 & 0xffffffe0ull, va >> 30));
    uint64_t pde = TRY(ReadEntry<uint64_t>(memory, pdpte & kAddrMask, (va >> 21) & 0x1ff));
    if (pde & kLarge) return (pde & kAddrMask & ~0x1fffffull) | (va & 0x1fffff);
    uint64_t pte = TRY(ReadEntry<uint64_t>(memory, pde & kAddrMask, (va >> 12) & 0x1ff));
    return (pte & kAddrMask) | (va & 0xfff);
  }

  // 32-bit 2-level; 4 MiB pages with CR4.PSE (PSE-36 high bits ignored: we have < 4 GiB).
  uint64_t pde = TRY(ReadEntry<uint32_t>(memory, paging.cr3 & 0xfffff000ull, va >> 22));
  if ((pde & kLarge) && (paging.cr4 & kCr4Pse)) return (pde & 0xffc00000ull) | (va & 0x3fffff);
  uint64_t pte = TRY(ReadEntry<uint32_t>(memory, pde & 0xfffff000ull, (va >> 12) & 0x3ff));
  return (pte & 0xfffff000ull) | (va & 0xfff);
}

}  // namespace xenkvm::vmm
