// The Xen PVH boot protocol (docs/misc/pvh.pandoc in Xen): the kernel (a PVH ELF, or a Linux
// bzImage holding one) loaded by physical address, the initrd as module 0, and hvm_start_info
// version 1 with the command line, memory map and RSDP address, for ebx at the
// XEN_ELFNOTE_PHYS32_ENTRY entry point. Where things go: docs/boot.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "abi/result.h"
#include "abi/xen.h"
#include "boot/decompress.h"
#include "mem/guest_memory.h"

namespace xenkvm::boot {

// What the user gave (xl's kernel= and ramdisk=); both are read, never kept.
struct BootImage {
  std::span<const uint8_t> kernel;
  std::span<const uint8_t> initrd;  // empty: none
};

struct BootOptions {
  uint64_t ram_size = 0;  // guest RAM is [0, ram_size), mapped in `memory`
  std::string_view cmdline;
  std::span<const hvm_memmap_table_entry> memory_map;  // given to the guest as it is
  uint64_t rsdp_paddr = 0;                             // ACPI RSDP; 0 = none
  DecompressLimits limits;                             // for a bzImage's payload
};

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
  uint64_t initrd_gpa = 0;  // 0 with no initrd
  uint64_t initrd_size = 0;
  bool bzimage = false;                          // the kernel came as a bzImage...
  Compression compression = Compression::kNone;  // ...with its payload in this format
  uint64_t elf_size = 0;                         // the (decompressed) ELF's size
  std::string guest_os;  // XEN_ELFNOTE_GUEST_OS ("linux"), empty without one
};

// Threads: the VMM's main thread, before any vCPU runs. Nothing is written to guest memory
// unless everything fits. Errors carry one line for the user (XEN_EINVAL for a bad image,
// XEN_EFAULT for a segment outside RAM, XEN_ENOMEM for an initrd that does not fit, XEN_E2BIG
// for a payload whose size is over the limits).
Result<PvhBoot> LoadPvhGuest(const BootImage& image, mem::GuestMemory& memory,
                             const BootOptions& options);

}  // namespace xenkvm::boot
