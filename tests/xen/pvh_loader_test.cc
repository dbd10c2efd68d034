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

// rsdp_paddr reaches start_info; no ACPI tables leave it 0; no GUEST_OS note, no name.
TEST_F(PvhLoaderTest, RsdpAddressInStartInfo) {
  auto img = MakeElf(true);
  auto boot = LoadPvhImage(img, memory_, kRam, "", map_, {}, 0xfc000000);
  ASSERT_TRUE(boot) << boot.error().message;
  hvm_start_info si;
  std::memcpy(&si, ram_.get() + boot->start_info_gpa, sizeof(si));
  EXPECT_EQ(si.rsdp_paddr, 0xfc000000u);
  EXPECT_EQ(boot->guest_os, "");
  boot = LoadPvhImage(img, memory_, kRam, "", map_);
  ASSERT_TRUE(boot);
  std::memcpy(&si, ram_.get() + boot->start_info_gpa, sizeof(si));
  EXPECT_EQ(si.rsdp_paddr, 0u);
}

// XEN_ELFNOTE_GUEST_OS (Linux's "linux") ahead of the entry note: both found; a name with
// control bytes reads as none.
TEST_F(PvhLoaderTest, GuestOsNote) {
  for (const char* name : {"linux", "li\x1bux"}) {
    auto img = MakeElf(true);
    uint8_t notes[44] = {};
    const uint32_t os[3] = {4, 6, XEN_ELFNOTE_GUEST_OS};
    std::memcpy(notes, os, 12);
    std::memcpy(notes + 12, "Xen", 4);
    std::memcpy(notes + 16, name, 6);
    std::memcpy(notes + 24, img.data() + 0x800, 20);  // the PHYS32_ENTRY note
    std::memcpy(img.data() + 0x800, notes, sizeof(notes));
    Elf64_Phdr note;
    std::memcpy(&note, img.data() + sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr), sizeof(note));
    note.p_filesz = sizeof(notes);
    std::memcpy(img.data() + sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr), &note, sizeof(note));
    auto boot = LoadPvhImage(img, memory_, kRam, "", map_);
    ASSERT_TRUE(boot) << boot.error().message;
    EXPECT_EQ(boot->entry, 0x100004u);
    EXPECT_EQ(boot->guest_os, name[2] == 'n' ? "linux" : "");
  }
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

// Hostile images: the loader's work is bounded by guest RAM, the entry point must be loaded,
// and a note found only in an SHT_NOTE section (as Mini-OS builds them) is found.
Elf64_Phdr* Phdr(std::vector<uint8_t>& img, int i) {
  return reinterpret_cast<Elf64_Phdr*>(img.data() + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr));
}

TEST_F(PvhLoaderTest, SegmentsTogetherLargerThanRamAreRefused) {
  // 200 copies of a segment covering nearly all RAM: each fits, together they don't.
  auto img = MakeElf(true);
  const int count = 200;
  Elf64_Phdr note = *Phdr(img, 1);
  Elf64_Phdr load = *Phdr(img, 0);
  load.p_memsz = kRam - load.p_paddr;
  img.resize(0x3000 + (count + 1) * sizeof(Elf64_Phdr));
  auto* eh = reinterpret_cast<Elf64_Ehdr*>(img.data());
  eh->e_phoff = 0x3000;
  eh->e_phnum = static_cast<Elf64_Half>(count + 1);
  std::memcpy(img.data() + 0x3000, &note, sizeof(note));
  for (int i = 1; i <= count; ++i)
    std::memcpy(img.data() + 0x3000 + i * sizeof(Elf64_Phdr), &load, sizeof(load));
  auto boot = LoadPvhImage(img, memory_, kRam, "", map_);
  ASSERT_FALSE(boot);
  EXPECT_STREQ(boot.error().message, "ELF segments larger than guest RAM");
}

TEST_F(PvhLoaderTest, EntryOutsideLoadedSegmentsIsRefused) {
  auto img = MakeElf(true);
  uint32_t entry = 0x300000;  // in RAM, but nothing is loaded there
  std::memcpy(img.data() + 0x810, &entry, 4);
  auto boot = LoadPvhImage(img, memory_, kRam, "", map_);
  ASSERT_FALSE(boot);
  EXPECT_STREQ(boot.error().message, "PVH entry point outside the loaded segments");
}

TEST_F(PvhLoaderTest, NoteInSectionOnlyIsFound) {
  auto img = MakeElf(true);
  Phdr(img, 1)->p_type = PT_NULL;  // no PT_NOTE segment any more
  // Section headers at 0x1800: a null section and an SHT_NOTE over the note at 0x800.
  auto* eh = reinterpret_cast<Elf64_Ehdr*>(img.data());
  eh->e_shoff = 0x1800;
  eh->e_shentsize = sizeof(Elf64_Shdr);
  eh->e_shnum = 2;
  Elf64_Shdr sh{};
  sh.sh_type = SHT_NOTE;
  sh.sh_offset = 0x800;
  sh.sh_size = 20;
  std::memcpy(img.data() + 0x1800 + sizeof(Elf64_Shdr), &sh, sizeof(sh));
  auto boot = LoadPvhImage(img, memory_, kRam, "", map_);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->entry, 0x100004u);
  sh.sh_size = 0x100000;  // runs past the file
  std::memcpy(img.data() + 0x1800 + sizeof(Elf64_Shdr), &sh, sizeof(sh));
  EXPECT_FALSE(LoadPvhImage(img, memory_, kRam, "", map_));
}

}  // namespace
}  // namespace xenkvm::vmm
