// vmm/pvh_loader: a hand-built ELF64 with a PT_LOAD and a Xen PHYS32_ENTRY note loads, and
// hvm_start_info carries the command line and memory map; bad images are refused.
#include <elf.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "abi/xen.h"
#include "vmm/pvh_loader.h"

namespace xenkvm::vmm {
namespace {

constexpr uint64_t kRam = 4 << 20;

std::vector<uint8_t> MakeElf(bool with_note) {
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
  load.p_offset = 0x1000;
  load.p_paddr = 0x100000;
  load.p_filesz = 0x10;
  load.p_memsz = 0x2000;
  std::memcpy(img.data() + eh.e_phoff, &load, sizeof(load));
  Elf64_Phdr note{};
  note.p_type = PT_NOTE;
  note.p_offset = 0x800;
  note.p_filesz = 20;
  std::memcpy(img.data() + eh.e_phoff + sizeof(load), &note, sizeof(note));
  uint32_t n[3] = {4, 4, with_note ? uint32_t{XEN_ELFNOTE_PHYS32_ENTRY} : 99u};
  std::memcpy(img.data() + 0x800, n, 12);
  std::memcpy(img.data() + 0x80c, "Xen", 4);
  uint32_t entry = 0x100004;
  std::memcpy(img.data() + 0x810, &entry, 4);
  std::memset(img.data() + 0x1000, 0xab, 0x10);
  return img;
}

class PvhLoaderTest : public ::testing::Test {
 protected:
  PvhLoaderTest() : ram_(static_cast<uint8_t*>(std::aligned_alloc(4096, kRam))) {
    std::memset(ram_.get(), 0xee, kRam);
    EXPECT_TRUE(memory_.AddSlot(0, 0, kRam, ram_.get()));
  }
  struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> ram_;
  mem::GuestMemory memory_;
  std::vector<xen::MemoryMapEntry> map_{{0, kRam, XEN_HVM_MEMMAP_TYPE_RAM}};
};

TEST_F(PvhLoaderTest, LoadsImageAndStartInfo) {
  auto img = MakeElf(true);
  auto boot = LoadPvhImage(img, memory_, kRam, "console=hvc0", map_);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->entry, 0x100004u);
  EXPECT_EQ(ram_.get()[0x100000], 0xab);
  EXPECT_EQ(ram_.get()[0x100010], 0);  // bss zeroed
  EXPECT_EQ(ram_.get()[0x101fff], 0);
  hvm_start_info si;
  std::memcpy(&si, ram_.get() + boot->start_info_gpa, sizeof(si));
  EXPECT_EQ(si.magic, XEN_HVM_START_MAGIC_VALUE);
  EXPECT_EQ(si.version, 1u);
  EXPECT_STREQ(reinterpret_cast<char*>(ram_.get() + si.cmdline_paddr), "console=hvc0");
  ASSERT_EQ(si.memmap_entries, 1u);
  hvm_memmap_table_entry e;
  std::memcpy(&e, ram_.get() + si.memmap_paddr, sizeof(e));
  EXPECT_EQ(e.size, kRam);
  EXPECT_EQ(e.type, XEN_HVM_MEMMAP_TYPE_RAM);
}

TEST_F(PvhLoaderTest, RefusesBadImages) {
  std::vector<uint8_t> junk(64, 0);
  EXPECT_FALSE(LoadPvhImage(junk, memory_, kRam, "", map_));
  EXPECT_FALSE(LoadPvhImage(MakeElf(false), memory_, kRam, "", map_));  // no PVH note
  auto img = MakeElf(true);
  img.resize(0x900);  // segment data truncated
  EXPECT_FALSE(LoadPvhImage(img, memory_, kRam, "", map_));
  EXPECT_FALSE(LoadPvhImage(MakeElf(true), memory_, 0x100800, "", map_));  // outside RAM
}

}  // namespace
}  // namespace xenkvm::vmm
