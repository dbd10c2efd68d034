// libFuzzer target: the PVH ELF loader (vmm/pvh_loader) on arbitrary image bytes. Checked: no
// crash or out-of-bounds access (ASan), and a loaded image's entry point and boot structures
// lie in guest RAM.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "vmm/pvh_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace xenkvm;
  constexpr uint64_t kRam = 4 << 20;
  static uint8_t* ram = static_cast<uint8_t*>(std::aligned_alloc(4096, kRam));
  mem::GuestMemory memory;
  (void)memory.AddSlot(0, 0, kRam, ram);
  const std::vector<xen::MemoryMapEntry> map{{0, kRam, XEN_HVM_MEMMAP_TYPE_RAM}};
  auto boot = vmm::LoadPvhImage(std::span(data, size), memory, kRam, "console=hvc0", map);
  if (boot && (boot->entry >= kRam || boot->start_info_gpa >= kRam || boot->image_end > kRam)) {
    std::fprintf(stderr, "loaded image outside RAM: entry %#x\n", boot->entry);
    std::abort();
  }
  return 0;
}
