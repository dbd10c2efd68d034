// Guest-virtual -> guest-physical translation by walking the guest's own page tables, as the
// CPU would for the access asked: paging off (identity), 32-bit 2-level (PSE), PAE 3-level and
// long-mode 4-level with 2 MiB / 1 GiB pages (Intel SDM vol. 3, chapter 4), with the
// permission checks Xen's guest_walk_tables makes for hypercall copies: write protection
// (supervisor writes honour CR0.WP), user/supervisor, no-execute and reserved bits.
#pragma once

#include <cstdint>

#include "abi/result.h"
#include "mem/guest_memory.h"
#include "xen/platform.h"

namespace xenkvm::vmm {

// The control registers that select the paging mode; a snapshot of the calling vCPU.
struct PagingState {
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;
};

// Threads: any (reads guest memory only). -EFAULT for a non-present entry, a reserved bit set,
// an access the combined permissions forbid, a table outside RAM, a non-canonical address or
// 5-level paging (LA57, which we don't offer). `user`: the access is made at CPL 3 (hypercall
// copies never are: only CPL 0 may call). SMAP is not modelled (it needs the caller's RFLAGS.AC).
Result<uint64_t> WalkPageTables(const mem::GuestMemory& memory, const PagingState& paging,
                                uint64_t gva, xen::Access access = xen::Access::kRead,
                                bool user = false);

}  // namespace xenkvm::vmm
