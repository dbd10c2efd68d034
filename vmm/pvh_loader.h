// The Xen PVH boot protocol for the Machine: boot/pvh_loader.h does the work (a PVH ELF or a
// Linux bzImage holding one, the initrd as module 0, hvm_start_info version 1); this adapts
// the VMM's memory map to it.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "abi/result.h"
#include "boot/pvh_loader.h"
#include "mem/guest_memory.h"
#include "xen/platform.h"

namespace xenkvm::vmm {

using PvhBoot = boot::PvhBoot;

// `rsdp_paddr` goes in hvm_start_info (0: no ACPI tables).
// Threads: the VMM's main thread, before any vCPU runs. Errors carry a message for the user
// (the errno is XEN_EINVAL for a bad image, XEN_EFAULT for a segment outside RAM, XEN_ENOMEM
// for an initrd that does not fit, XEN_E2BIG for a payload over the decompression limits).
Result<PvhBoot> LoadPvhImage(std::span<const uint8_t> image, mem::GuestMemory& memory,
                             uint64_t ram_size, const std::string& cmdline,
                             std::span<const xen::MemoryMapEntry> memory_map,
                             std::span<const uint8_t> initrd = {}, uint64_t rsdp_paddr = 0);

}  // namespace xenkvm::vmm
