// The kernel file as the user gives it (xl's kernel=): a PVH ELF, used in place, or a Linux
// bzImage such as Debian's /boot/vmlinuz-*, whose compressed payload is the vmlinux ELF (Xen's
// bzImage loader reads it the same way, then hands the ELF to its ELF loader).
#pragma once

#include <cstdint>
#include <span>

#include "abi/result.h"
#include "boot/decompress.h"

namespace xenkvm::boot {

struct KernelElf {
  Buffer owned;                  // the decompressed vmlinux (empty for a plain ELF)
  std::span<const uint8_t> elf;  // the ELF to load: into `owned` or the caller's file
  Compression compression = Compression::kNone;  // the bzImage payload's format
  bool bzimage = false;
};

// `file` must outlive the result when it is a plain ELF. One error line for a file that is
// neither, a bad setup header, or a payload that does not decompress within `limits`.
Result<KernelElf> UnpackKernel(std::span<const uint8_t> file, const DecompressLimits& limits = {});

}  // namespace xenkvm::boot
