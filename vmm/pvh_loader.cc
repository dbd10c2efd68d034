// PVH loading for the Machine; see pvh_loader.h.
#include "vmm/pvh_loader.h"

#include <vector>

namespace xenkvm::vmm {

Result<PvhBoot> LoadPvhImage(std::span<const uint8_t> image, mem::GuestMemory& memory,
                             uint64_t ram_size, const std::string& cmdline,
                             std::span<const xen::MemoryMapEntry> memory_map,
                             std::span<const uint8_t> initrd, uint64_t rsdp_paddr) {
  std::vector<hvm_memmap_table_entry> table;
  table.reserve(memory_map.size());
  for (const xen::MemoryMapEntry& e : memory_map) table.push_back({e.addr, e.size, e.type, 0});
  const boot::BootOptions options{.ram_size = ram_size,
                                  .cmdline = cmdline,
                                  .memory_map = table,
                                  .rsdp_paddr = rsdp_paddr,
                                  .limits = {}};
  return boot::LoadPvhGuest(boot::BootImage{.kernel = image, .initrd = initrd}, memory, options);
}

}  // namespace xenkvm::vmm
