// The Xen PVH boot protocol (xen/arch-x86/hvm/start_info.h, docs/misc/pvh.pandoc in Xen):
// load an ELF64 or ELF32 image by physical address, find its XEN_ELFNOTE_PHYS32_ENTRY note,
// and build hvm_start_info with the command line and memory map for ebx at entry.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "abi/result.h"
#include "mem/guest_memory.h"
#include "xen/platform.h"

namespace xenkvm::vmm {

struct PvhBoot {
  uint32_t entry = 0;           // 32-bit physical entry point (XEN_ELFNOTE_PHYS32_ENTRY)
  uint64_t start_info_gpa = 0;  // goes in ebx
  uint64_t image_end = 0;       // first byte after the highest loaded segment
  // The executable (PF_X) PT_LOAD segments as loaded, where boot/hypercall_sites.h looks.
  struct Range {
    uint64_t gpa = 0;
    uint64_t size = 0;
  };
  std::vector<Range> code;
  std::string guest_os;  // XEN_ELFNOTE_GUEST_OS ("linux"), empty without one
};

// `rsdp_paddr` goes in hvm_start_info (0: no ACPI tables).
// Threads: the VMM's main thread, before any vCPU runs. Errors carry a message for the user
// (the errno is XEN_EINVAL for a bad image, XEN_EFAULT for a segment outside RAM).
Result<PvhBoot> LoadPvhImage(std::span<const uint8_t> image, mem::GuestMemory& memory,
                             uint64_t ram_size, const std::string& cmdline,
                             std::span<const xen::MemoryMapEntry> memory_map,
                             uint64_t rsdp_paddr = 0);

}  // namespace xenkvm::vmm
