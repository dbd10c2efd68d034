// Guest page-table walker; see page_walk.h.
#include "vmm/page_walk.h"

namespace xenkvm::vmm {

namespace {
constexpr uint64_t kCr0Wp = 1ull << 16;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pse = 1ull << 4;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kCr4La57 = 1ull << 12;
constexpr uint64_t kEferNxe = 1ull << 11;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint64_t kPresent = 1ull << 0;
constexpr uint64_t kWritable = 1ull << 1;
constexpr uint64_t kUser = 1ull << 2;
constexpr uint64_t kLarge = 1ull << 7;
constexpr uint64_t kNoExec = 1ull << 63;
constexpr uint64_t kAddrMask = 0x000ffffffffff000ull;  // bits 51:12 of a 64-bit entry
constexpr uint64_t kPdpteReserved = 0x1e6;             // PAE PDPTE: bits 1, 2, 5-8
constexpr uint64_t kLarge2MReserved = 0x1fe000;        // bits 20:13 of a 2 MiB mapping
constexpr uint64_t kLarge1GReserved = 0x3fffe000;      // bits 29:13 of a 1 GiB mapping

// One table entry; page tables live in guest RAM like anything else.
template <class Entry>
Result<uint64_t> ReadEntry(const mem::GuestMemory& memory, uint64_t table, uint64_t index) {
  auto e = memory.ReadObj<Entry>(table + index * sizeof(Entry));
  if (!e) return Fail(XEN_EFAULT, "page table outside RAM");
  if ((*e & kPresent) == 0) return Fail(XEN_EFAULT, "page not present");
  return static_cast<uint64_t>(*e);
}

// Permissions accumulate down the walk: writable and user only if every level says so,
// no-execute if any level says so.
struct Rights {
  bool writable = true;
  bool user = true;
  bool no_exec = false;
  void Add(uint64_t e, bool nx_enabled) {
    writable &= (e & kWritable) != 0;
    user &= (e & kUser) != 0;
    no_exec |= nx_enabled && (e & kNoExec) != 0;
  }
};

Result<uint64_t> Check(const PagingState& paging, const Rights& r, xen::Access access, bool user,
                       uint64_t gpa) {
  if (user && !r.user) return Fail(XEN_EFAULT, "user access to a supervisor page");
  if (access == xen::Access::kWrite && !r.writable && (user || (paging.cr0 & kCr0Wp))) {
    return Fail(XEN_EFAULT, "write to a read-only page");
  }
  if (access == xen::Access::kFetch && r.no_exec)
    return Fail(XEN_EFAULT, "fetch from a no-execute page");
  return gpa;
}
}  // namespace

Result<uint64_t> WalkPageTables(const mem::GuestMemory& memory, const PagingState& paging,
                                uint64_t gva, xen::Access access, bool user) {
  if ((paging.cr0 & kCr0Pg) == 0) return gva & 0xffffffffull;  // paging off: 32-bit physical

  const bool nxe = (paging.efer & kEferNxe) != 0;
  // With EFER.NXE clear, bit 63 of a PAE/long-mode entry is reserved.
  const uint64_t nx_reserved = nxe ? 0 : kNoExec;
  Rights rights;
  if (paging.efer & kEferLma) {
    if (paging.cr4 & kCr4La57) return Fail(XEN_EFAULT, "5-level paging not supported");
    // Canonical: bits 63:47 all equal.
    const int64_t sign = static_cast<int64_t>(gva) >> 47;
    if (sign != 0 && sign != -1) return Fail(XEN_EFAULT, "non-canonical address");
    uint64_t table = paging.cr3 & kAddrMask;
    for (int level = 4; level >= 1; --level) {
      const int shift = 12 + 9 * (level - 1);
      uint64_t e = TRY(ReadEntry<uint64_t>(memory, table, (gva >> shift) & 0x1ff));
      if (e & nx_reserved) return Fail(XEN_EFAULT, "reserved bit (NX without EFER.NXE)");
      if (level == 4 && (e & kLarge)) return Fail(XEN_EFAULT, "reserved bit (PS in a PML4E)");
      rights.Add(e, nxe);
      const bool large = (level == 2 || level == 3) && (e & kLarge);
      if (large && (e & (level == 3 ? kLarge1GReserved : kLarge2MReserved))) {
        return Fail(XEN_EFAULT, "reserved bit in a large-page entry");
      }
      if (level == 1 || large) {
        const uint64_t page_mask = (1ull << shift) - 1;
        return Check(paging, rights, access, user,
                     ((e & kAddrMask) & ~page_mask) | (gva & page_mask));
      }
      table = e & kAddrMask;
    }
    return Fail(XEN_EFAULT, "unreachable");
  }

  const uint64_t va = gva & 0xffffffffull;
  if (paging.cr4 & kCr4Pae) {
    // PAE: 4 PDPTEs at CR3 (32-byte aligned; no permission bits), then 2 MiB or 4 KiB pages.
    uint64_t pdpte = TRY(ReadEntry<uint64_t>(memory, paging.cr3 & 0xffffffe0ull, va >> 30));
    if (pdpte & (kPdpteReserved | kNoExec)) return Fail(XEN_EFAULT, "reserved bit in a PDPTE");
    uint64_t pde = TRY(ReadEntry<uint64_t>(memory, pdpte & kAddrMask, (va >> 21) & 0x1ff));
    if (pde & nx_reserved) return Fail(XEN_EFAULT, "reserved bit (NX without EFER.NXE)");
    rights.Add(pde, nxe);
    if (pde & kLarge) {
      if (pde & kLarge2MReserved) return Fail(XEN_EFAULT, "reserved bit in a large-page entry");
      return Check(paging, rights, access, user,
                   (pde & kAddrMask & ~0x1fffffull) | (va & 0x1fffff));
    }
    uint64_t pte = TRY(ReadEntry<uint64_t>(memory, pde & kAddrMask, (va >> 12) & 0x1ff));
    if (pte & nx_reserved) return Fail(XEN_EFAULT, "reserved bit (NX without EFER.NXE)");
    rights.Add(pte, nxe);
    return Check(paging, rights, access, user, (pte & kAddrMask) | (va & 0xfff));
  }

  // 32-bit 2-level; 4 MiB pages with CR4.PSE (PSE-36 high bits ignored: we have < 4 GiB).
  uint64_t pde = TRY(ReadEntry<uint32_t>(memory, paging.cr3 & 0xfffff000ull, va >> 22));
  rights.Add(pde, false);
  if ((pde & kLarge) && (paging.cr4 & kCr4Pse)) {
    return Check(paging, rights, access, user, (pde & 0xffc00000ull) | (va & 0x3fffff));
  }
  uint64_t pte = TRY(ReadEntry<uint32_t>(memory, pde & 0xfffff000ull, (va >> 12) & 0x3ff));
  rights.Add(pte, false);
  return Check(paging, rights, access, user, (pte & 0xfffff000ull) | (va & 0xfff));
}

}  // namespace xenkvm::vmm
