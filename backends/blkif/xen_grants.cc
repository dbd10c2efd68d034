// blkif::GrantAccess over xen::GrantTable; see xen_grants.h.
#include "backends/blkif/xen_grants.h"

#include <memory>

namespace xenkvm::blkif {

Result<GrantMapping> XenGrantAccess::Map(GrantRef ref, bool writable) {
  xen::GrantMapping mapping = TRY(table_.Map(backend_domid_, ref, /*readonly=*/!writable));
  std::span<std::byte> data = mapping.data();
  if (data.size() != kPageSize) return Fail(XEN_EFAULT, "granted page of unexpected size");
  // The cookie owns the xen mapping (its pin) until Release.
  auto owner = std::make_unique<xen::GrantMapping>(std::move(mapping));
  auto* page = reinterpret_cast<uint8_t*>(data.data());
  return GrantMapping(this, std::span<uint8_t, kPageSize>(page, kPageSize),
                      reinterpret_cast<uintptr_t>(owner.release()));
}

void XenGrantAccess::Release(uintptr_t cookie) {
  delete reinterpret_cast<xen::GrantMapping*>(cookie);  // unpins
}

}  // namespace xenkvm::blkif
