// Where the PVH loader puts what is not the kernel: the start_info area and the initrd, as
// pure functions of the kernel's segments and the memory map. Linux's PVH entry
// (arch/x86/platform/pvh/head.S) reads start_info in 32-bit flat mode, then the memory map and
// module list through its early page tables, which map only the first 1 GiB; it takes the
// initrd's address as a 32-bit boot_params field.
#pragma once

#include <cstdint>
#include <span>

#include "abi/result.h"
#include "abi/xen.h"
#include "boot/elf_image.h"

namespace xenkvm::boot {

inline constexpr uint64_t kPageSize = 0x1000;
// Low memory below 1 MiB that PVH images don't load into: the start_info area goes here when
// no segment overlaps it (the spot other PVH VMMs use too), else on the pages after the image.
inline constexpr uint64_t kStartInfoLow = 0x6000;
inline constexpr uint64_t kEarlyMapEnd = uint64_t{1} << 30;  // Linux PVH's early identity map

inline uint64_t PageAlignUp(uint64_t x) { return (x + kPageSize - 1) & ~(kPageSize - 1); }

// First byte after the highest segment (memsz).
uint64_t ImageEnd(std::span<const ElfSegment> loads);

// Base of the start_info area (`area_size` bytes): kStartInfoLow, or the first page after
// image_end when a segment overlaps it. XEN_EFAULT when that runs past ram_size.
Result<uint64_t> PlaceStartInfo(std::span<const ElfSegment> loads, uint64_t area_size,
                                uint64_t ram_size);

// The lowest page-aligned address at or above `floor` where `size` bytes lie inside one RAM
// entry of `map` and inside [0, min(ram_size, kEarlyMapEnd)): Linux reaches it through its
// early 1 GiB map and a 32-bit boot_params field. XEN_ENOMEM when there is none.
Result<uint64_t> PlaceInitrd(uint64_t floor, uint64_t size, uint64_t ram_size,
                             std::span<const hvm_memmap_table_entry> map);

}  // namespace xenkvm::boot
