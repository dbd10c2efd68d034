// The block backend's view of guest pages through the domain's grant table
// (xen/include/public/grant_table.h): blkif::GrantAccess over xen::GrantTable::Map for the
// backend domain (0), so every data page passes Xen's checks (GTF_permit_access for dom0,
// GTF_readonly against writes) and is pinned (GTF_reading/GTF_writing) while mapped.
//
// Pages stay valid for the whole I/O: a mapping holds a pin in the grant table until the
// request completes; XENMEM_decrease_reservation skips pinned frames (GrantTable::MappedGfns),
// and guest RAM is one host mapping that never moves, so the host pointer handed to io_uring
// cannot dangle. Threads: any; no lock of its own (each mapping is its own heap object).
#pragma once

#include <cstdint>

#include "backends/blkif/grant_access.h"
#include "xen/grants.h"

namespace xenkvm::blkif {

class XenGrantAccess final : public GrantAccess {
 public:
  explicit XenGrantAccess(xen::GrantTable& table, uint16_t backend_domid = 0)
      : table_(table), backend_domid_(backend_domid) {}

  Result<GrantMapping> Map(GrantRef ref, bool writable) override;

 protected:
  void Release(uintptr_t cookie) override;

 private:
  xen::GrantTable& table_;
  const uint16_t backend_domid_;
};

}  // namespace xenkvm::blkif
