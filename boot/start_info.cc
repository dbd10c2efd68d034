// hvm_start_info writing; see start_info.h.
#include "boot/start_info.h"

#include <cstring>
#include <vector>

namespace xenkvm::boot {

Result<> WriteStartInfo(mem::GuestMemory& memory, const StartInfo& info) {
  if (info.cmdline.size() > kMaxCmdline)
    return Fail(XEN_EINVAL, "command line longer than 4095 bytes");
  if (info.memory_map.size() > kMaxMemmapEntries)
    return Fail(XEN_EINVAL, "memory map longer than 127 entries");
  // The whole area is written (zeros where unused), so nothing of earlier contents remains.
  std::vector<std::byte> area(kStartInfoAreaSize);
  hvm_start_info si{};
  si.magic = XEN_HVM_START_MAGIC_VALUE;
  si.version = 1;  // has memmap_paddr / memmap_entries
  si.cmdline_paddr = info.base + kCmdlineOffset;
  si.rsdp_paddr = info.rsdp_paddr;
  si.memmap_paddr = info.base + kMemmapOffset;
  si.memmap_entries = static_cast<uint32_t>(info.memory_map.size());
  if (info.initrd) {
    si.nr_modules = 1;
    si.modlist_paddr = info.base + kModlistOffset;
    const hvm_modlist_entry module{
        .paddr = info.initrd->paddr, .size = info.initrd->size, .cmdline_paddr = 0, .reserved = 0};
    std::memcpy(area.data() + kModlistOffset, &module, sizeof(module));
  }
  std::memcpy(area.data(), &si, sizeof(si));
  for (size_t i = 0; i < info.memory_map.size(); ++i) {
    hvm_memmap_table_entry entry = info.memory_map[i];
    entry.reserved = 0;
    std::memcpy(area.data() + kMemmapOffset + i * sizeof(entry), &entry, sizeof(entry));
  }
  std::memcpy(area.data() + kCmdlineOffset, info.cmdline.data(), info.cmdline.size());
  return memory.Write(info.base, area);
}

}  // namespace xenkvm::boot
