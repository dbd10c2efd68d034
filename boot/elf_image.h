// A PVH kernel's ELF file, parsed as Xen's libelf reads it (xen/common/libelf): an x86 ELF64 or
// ELF32 image, its loadable segments by physical address, and the XEN_ELFNOTE_PHYS32_ENTRY note
// and XEN_ELFNOTE_GUEST_OS (xen/include/public/elfnote.h) from its PT_NOTE segments or, without
// any, SHT_NOTE sections.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "abi/result.h"

namespace xenkvm::boot {

// One PT_LOAD: file bytes [offset, offset + filesz) go to guest-physical paddr, the rest of
// memsz is zeroed. Checked: the file bytes lie inside the image and filesz <= memsz.
struct ElfSegment {
  uint64_t paddr = 0;
  uint64_t offset = 0;
  uint64_t filesz = 0;
  uint64_t memsz = 0;
  bool executable = false;  // PF_X: where boot/hypercall_sites.h looks
};

struct ElfImage {
  uint64_t elf_entry = 0;  // e_entry (informational: PVH enters at pvh_entry)
  uint32_t pvh_entry = 0;  // XEN_ELFNOTE_PHYS32_ENTRY: 32-bit physical entry point
  bool elf64 = false;
  std::vector<ElfSegment> loads;  // PT_LOAD segments with memsz != 0, in file order
  std::string guest_os;           // XEN_ELFNOTE_GUEST_OS ("linux"), empty without one
};

// Starts with the ELF magic.
bool IsElf(std::span<const uint8_t> image);

// Errors (XEN_EINVAL) name the first thing wrong with the file. Only headers are read; the
// segments' bytes stay in `image`, which must outlive their use.
Result<ElfImage> ParseElfImage(std::span<const uint8_t> image);

}  // namespace xenkvm::boot
