// hvm_start_info, the structure a PVH kernel finds at ebx (xen/include/public/arch-x86/hvm/
// start_info.h), version 1: command line, modules (module 0 is the initrd, as Linux's
// arch/x86/platform/pvh/enlighten.c takes it), memory map and the ACPI RSDP address, written
// into guest memory as one 12 KiB area.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "abi/result.h"
#include "abi/xen.h"
#include "mem/guest_memory.h"

namespace xenkvm::boot {

// The layout we write, as the header's comment defines it (the C structs must match it).
static_assert(sizeof(hvm_start_info) == 56);
static_assert(offsetof(hvm_start_info, magic) == 0 && offsetof(hvm_start_info, version) == 4 &&
              offsetof(hvm_start_info, flags) == 8 && offsetof(hvm_start_info, nr_modules) == 12 &&
              offsetof(hvm_start_info, modlist_paddr) == 16 &&
              offsetof(hvm_start_info, cmdline_paddr) == 24 &&
              offsetof(hvm_start_info, rsdp_paddr) == 32 &&
              offsetof(hvm_start_info, memmap_paddr) == 40 &&
              offsetof(hvm_start_info, memmap_entries) == 48 &&
              offsetof(hvm_start_info, reserved) == 52);
static_assert(sizeof(hvm_modlist_entry) == 32);
static_assert(offsetof(hvm_modlist_entry, paddr) == 0 && offsetof(hvm_modlist_entry, size) == 8 &&
              offsetof(hvm_modlist_entry, cmdline_paddr) == 16 &&
              offsetof(hvm_modlist_entry, reserved) == 24);
static_assert(sizeof(hvm_memmap_table_entry) == 24);
static_assert(offsetof(hvm_memmap_table_entry, addr) == 0 &&
              offsetof(hvm_memmap_table_entry, size) == 8 &&
              offsetof(hvm_memmap_table_entry, type) == 16 &&
              offsetof(hvm_memmap_table_entry, reserved) == 20);

// The area, from its (page-aligned) base: start_info then the module list in the first page,
// the memory map in the second, the command line in the third.
inline constexpr uint64_t kStartInfoAreaSize = 0x3000;
inline constexpr uint64_t kModlistOffset = 0x40;
inline constexpr uint64_t kMemmapOffset = 0x1000;
inline constexpr uint64_t kCmdlineOffset = 0x2000;
inline constexpr size_t kMaxCmdline = 0xfff;  // bytes, without the NUL
// Linux copies the map into boot_params' e820 table (128 entries, E820_MAX_ENTRIES_ZEROPAGE)
// without truncating it, then adds one entry for the ISA hole: 127 is the most it takes.
inline constexpr size_t kMaxMemmapEntries = 127;

struct Module {
  uint64_t paddr = 0;
  uint64_t size = 0;
};

struct StartInfo {
  uint64_t base = 0;  // where the area goes (page aligned, inside guest RAM)
  std::string_view cmdline;
  std::span<const hvm_memmap_table_entry> memory_map;  // copied as it is
  std::optional<Module> initrd;  // module 0, command line none (cmdline_paddr 0)
  uint64_t rsdp_paddr = 0;       // 0: none given (Linux then scans for the RSDP)
};

// Writes the whole area; XEN_EINVAL for a command line or memory map over the limits above.
Result<> WriteStartInfo(mem::GuestMemory& memory, const StartInfo& info);

}  // namespace xenkvm::boot
