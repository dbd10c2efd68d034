// Test-only images: a minimal PVH ELF64 (one executable PT_LOAD, a Xen PHYS32_ENTRY note) and
// a bzImage wrapping a payload, its setup header laid out as Linux's boot protocol
// (Documentation/arch/x86/boot.rst) defines it; guest RAM to load them into.
#pragma once

#include <elf.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "abi/xen.h"
#include "mem/guest_memory.h"

namespace xenkvm::boot::test {

// Loads 0x10 bytes of 0xab at `paddr`, memsz `memsz`, entry at paddr + 4.
inline std::vector<uint8_t> MakePvhElf(uint64_t paddr = 0x100000, uint64_t memsz = 0x2000) {
  std::vector<uint8_t> img(0x2000, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 2;
  std::memcpy(img.data(), &eh, sizeof(eh));
  Elf64_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_flags = PF_R | PF_X;
  load.p_offset = 0x1000;
  load.p_paddr = paddr;
  load.p_filesz = 0x10;
  load.p_memsz = memsz;
  std::memcpy(img.data() + eh.e_phoff, &load, sizeof(load));
  Elf64_Phdr note{};
  note.p_type = PT_NOTE;
  note.p_offset = 0x800;
  note.p_filesz = 24;
  std::memcpy(img.data() + eh.e_phoff + sizeof(load), &note, sizeof(note));
  const uint32_t n[3] = {4, 8, XEN_ELFNOTE_PHYS32_ENTRY};  // 8-byte value, as Linux emits it
  std::memcpy(img.data() + 0x800, n, 12);
  std::memcpy(img.data() + 0x80c, "Xen", 4);
  const uint64_t entry = paddr + 4;
  std::memcpy(img.data() + 0x810, &entry, 8);
  std::memset(img.data() + 0x1000, 0xab, 0x10);
  return img;
}

// Field offsets in the file (boot.rst, "The real-mode kernel header").
inline constexpr size_t kSetupSects = 0x1f1, kBootFlag = 0x1fe, kHdrS = 0x202, kVersion = 0x206,
                        kPayloadOffset = 0x248, kPayloadLength = 0x24c;

// setup_sects real-mode sectors after the boot sector, then a protected-mode part with some
// code before the payload and some after it, as Linux lays one out.
inline std::vector<uint8_t> MakeBzImage(const std::vector<uint8_t>& payload,
                                        uint8_t setup_sects = 27, uint16_t version = 0x020f) {
  const size_t pm = (size_t{setup_sects == 0 ? 4u : setup_sects} + 1) * 512;
  const size_t payload_at = 0x4e0;  // from the protected-mode start
  std::vector<uint8_t> img(pm + payload_at + payload.size() + 0x200, 0xcc);
  std::memset(img.data(), 0, pm);
  img[kSetupSects] = setup_sects;
  img[kBootFlag] = 0x55;
  img[kBootFlag + 1] = 0xaa;
  std::memcpy(img.data() + kHdrS, "HdrS", 4);
  std::memcpy(img.data() + kVersion, &version, 2);
  const auto offset = static_cast<uint32_t>(payload_at);
  const auto length = static_cast<uint32_t>(payload.size());
  std::memcpy(img.data() + kPayloadOffset, &offset, 4);
  std::memcpy(img.data() + kPayloadLength, &length, 4);
  std::memcpy(img.data() + pm + payload_at, payload.data(), payload.size());
  return img;
}

// Guest RAM [0, size) in a lazily backed mapping (untouched pages cost nothing).
class TestRam {
 public:
  explicit TestRam(uint64_t size) : size_(size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    host_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    if (host_ != nullptr) (void)memory_.AddSlot(0, 0, size, host_);
  }
  ~TestRam() {
    if (host_ != nullptr) ::munmap(host_, size_);
  }
  TestRam(const TestRam&) = delete;
  TestRam& operator=(const TestRam&) = delete;
  uint8_t* host() { return host_; }
  uint64_t size() const { return size_; }
  mem::GuestMemory& memory() { return memory_; }
  template <class T>
  T Get(uint64_t gpa) const {
    T v;
    std::memcpy(&v, host_ + gpa, sizeof(v));
    return v;
  }

 private:
  uint64_t size_;
  uint8_t* host_ = nullptr;
  mem::GuestMemory memory_;
};

}  // namespace xenkvm::boot::test
