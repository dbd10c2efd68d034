// PVH loading; see pvh_loader.h.
#include "boot/pvh_loader.h"

#include <cstring>

#include "abi/xen.h"
#include "boot/elf_image.h"
#include "boot/kernel_image.h"
#include "boot/layout.h"
#include "boot/start_info.h"
#include "mem/layout_guard.h"

namespace xenkvm::boot {

namespace {
// Zeroes guest memory in place (no buffer the size of the range).
Result<> ZeroFill(mem::GuestMemory& memory, uint64_t gpa, uint64_t size) {
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory);
  uint8_t* host = TRY(memory.TranslateGuarded(gpa, size));
  std::memset(host, 0, size);
  return {};
}
}  // namespace

Result<PvhBoot> LoadPvhGuest(const BootImage& image, mem::GuestMemory& memory,
                             const BootOptions& options) {
  const uint64_t ram_size = options.ram_size;
  const KernelElf kernel = TRY(UnpackKernel(image.kernel, options.limits));
  const ElfImage elf = TRY(ParseElfImage(kernel.elf));
  PvhBoot boot;
  boot.entry = elf.pvh_entry;
  boot.guest_os = elf.guest_os;
  boot.bzimage = kernel.bzimage;
  boot.compression = kernel.compression;
  boot.elf_size = kernel.elf.size();

  // Work is bounded by guest RAM: every segment lies in RAM and together they fit in it (so
  // thousands of overlapping huge segments can't make loading take hours).
  uint64_t total = 0;
  bool entry_loaded = false;
  for (const ElfSegment& s : elf.loads) {
    if (s.paddr >= ram_size || s.memsz > ram_size - s.paddr)
      return Fail(XEN_EFAULT, "ELF segment outside guest RAM");
    total += s.memsz;
    if (total > ram_size) return Fail(XEN_EFAULT, "ELF segments larger than guest RAM");
    entry_loaded |= boot.entry >= s.paddr && boot.entry - s.paddr < s.memsz;
  }
  if (!entry_loaded) return Fail(XEN_EINVAL, "PVH entry point outside the loaded segments");
  // Everything that can be refused without writing is checked before the first write.
  boot.image_end = ImageEnd(elf.loads);
  const uint64_t base = TRY(PlaceStartInfo(elf.loads, kStartInfoAreaSize, ram_size));
  if (options.cmdline.size() > kMaxCmdline)
    return Fail(XEN_EINVAL, "command line longer than 4095 bytes");
  if (options.memory_map.size() > kMaxMemmapEntries)
    return Fail(XEN_EINVAL, "memory map longer than 127 entries");
  StartInfo info{.base = base,
                 .cmdline = options.cmdline,
                 .memory_map = options.memory_map,
                 .initrd = std::nullopt,
                 .rsdp_paddr = options.rsdp_paddr};
  if (!image.initrd.empty()) {
    const uint64_t floor = PageAlignUp(std::max(boot.image_end, base + kStartInfoAreaSize));
    boot.initrd_gpa = TRY(PlaceInitrd(floor, image.initrd.size(), ram_size, options.memory_map));
    boot.initrd_size = image.initrd.size();
    info.initrd = Module{boot.initrd_gpa, boot.initrd_size};
  }

  for (const ElfSegment& s : elf.loads) {
    if (s.filesz != 0)
      TRY(memory.Write(s.paddr, std::as_bytes(kernel.elf.subspan(s.offset, s.filesz))));
    if (s.memsz > s.filesz) TRY(ZeroFill(memory, s.paddr + s.filesz, s.memsz - s.filesz));
    if (s.executable && s.filesz != 0) boot.code.push_back({s.paddr, s.filesz});
  }
  if (info.initrd) TRY(memory.Write(boot.initrd_gpa, std::as_bytes(image.initrd)));
  TRY(WriteStartInfo(memory, info));
  boot.start_info_gpa = base;
  return boot;
}

}  // namespace xenkvm::boot
