// boot/start_info, boot/layout and boot/pvh_loader: hvm_start_info version 1 as written (its
// fields, module list, memory map, command line), where the initrd goes (after the kernel's
// memsz, page aligned, in RAM, below 1 GiB) and the one line when it doesn't fit; a bzImage
// and an initrd loaded together.
#include <gtest/gtest.h>

#include <string>

#include "boot/layout.h"
#include "boot/pvh_loader.h"
#include "boot/start_info.h"
#include "tests/boot/codecs.h"
#include "tests/boot/images.h"

namespace xenkvm::boot {
namespace {

using test::ByteVec;

constexpr uint64_t kMiB = 1u << 20;

TEST(StartInfo, Version1AsWritten) {
  test::TestRam ram(16 * kMiB);
  std::memset(ram.host() + 0x6000, 0xee, kStartInfoAreaSize);  // nothing of this survives
  const hvm_memmap_table_entry map[] = {{0, 0x9f000, XEN_HVM_MEMMAP_TYPE_RAM, 77},
                                        {0x100000, 15 * kMiB, XEN_HVM_MEMMAP_TYPE_RAM, 0},
                                        {0xfee00000, 0x1000, XEN_HVM_MEMMAP_TYPE_RESERVED, 0}};
  const StartInfo info{.base = 0x6000,
                       .cmdline = "console=hvc0 rdinit=/init",
                       .memory_map = map,
                       .initrd = Module{0x400000, 0x12345},
                       .rsdp_paddr = 0xfe000};
  ASSERT_TRUE(WriteStartInfo(ram.memory(), info));
  const auto si = ram.Get<hvm_start_info>(0x6000);
  EXPECT_EQ(si.magic, XEN_HVM_START_MAGIC_VALUE);
  EXPECT_EQ(si.version, 1u);
  EXPECT_EQ(si.flags, 0u);
  EXPECT_EQ(si.nr_modules, 1u);
  EXPECT_EQ(si.modlist_paddr, 0x6000 + kModlistOffset);
  EXPECT_EQ(si.cmdline_paddr, 0x6000 + kCmdlineOffset);
  EXPECT_EQ(si.rsdp_paddr, 0xfe000u);
  EXPECT_EQ(si.memmap_paddr, 0x6000 + kMemmapOffset);
  EXPECT_EQ(si.memmap_entries, 3u);
  EXPECT_EQ(si.reserved, 0u);
  const auto mod = ram.Get<hvm_modlist_entry>(si.modlist_paddr);
  EXPECT_EQ(mod.paddr, 0x400000u);
  EXPECT_EQ(mod.size, 0x12345u);
  EXPECT_EQ(mod.cmdline_paddr, 0u);
  EXPECT_EQ(mod.reserved, 0u);
  for (size_t i = 0; i < 3; ++i) {
    const auto e =
        ram.Get<hvm_memmap_table_entry>(si.memmap_paddr + i * sizeof(hvm_memmap_table_entry));
    EXPECT_EQ(e.addr, map[i].addr);
    EXPECT_EQ(e.size, map[i].size);
    EXPECT_EQ(e.type, map[i].type);
    EXPECT_EQ(e.reserved, 0u);  // not copied from the caller
  }
  EXPECT_EQ(ram.Get<uint8_t>(si.memmap_paddr + 3 * sizeof(hvm_memmap_table_entry)), 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(ram.host() + si.cmdline_paddr),
               "console=hvc0 rdinit=/init");
}

TEST(StartInfo, NoInitrdNoModules) {
  test::TestRam ram(1 * kMiB);
  const hvm_memmap_table_entry map[] = {{0, kMiB, XEN_HVM_MEMMAP_TYPE_RAM, 0}};
  ASSERT_TRUE(WriteStartInfo(ram.memory(), StartInfo{.base = 0x6000,
                                                     .cmdline = "",
                                                     .memory_map = map,
                                                     .initrd = std::nullopt,
                                                     .rsdp_paddr = 0}));
  const auto si = ram.Get<hvm_start_info>(0x6000);
  EXPECT_EQ(si.nr_modules, 0u);
  EXPECT_EQ(si.modlist_paddr, 0u);
  EXPECT_EQ(si.rsdp_paddr, 0u);
  EXPECT_EQ(ram.Get<uint8_t>(si.cmdline_paddr), 0);
}

TEST(StartInfo, OverLimitsRefused) {
  test::TestRam ram(1 * kMiB);
  const std::string long_line(kMaxCmdline + 1, 'x');
  const std::vector<hvm_memmap_table_entry> long_map(kMaxMemmapEntries + 1,
                                                     {0, kMiB, XEN_HVM_MEMMAP_TYPE_RAM, 0});
  EXPECT_FALSE(WriteStartInfo(ram.memory(), StartInfo{.base = 0x6000,
                                                      .cmdline = long_line,
                                                      .memory_map = {},
                                                      .initrd = std::nullopt,
                                                      .rsdp_paddr = 0}));
  EXPECT_FALSE(WriteStartInfo(ram.memory(), StartInfo{.base = 0x6000,
                                                      .cmdline = "",
                                                      .memory_map = long_map,
                                                      .initrd = std::nullopt,
                                                      .rsdp_paddr = 0}));
  const std::string max_line(kMaxCmdline, 'y');
  ASSERT_TRUE(WriteStartInfo(ram.memory(), StartInfo{.base = 0x6000,
                                                     .cmdline = max_line,
                                                     .memory_map = {},
                                                     .initrd = std::nullopt,
                                                     .rsdp_paddr = 0}));
  EXPECT_EQ(ram.Get<uint8_t>(0x6000 + kCmdlineOffset + kMaxCmdline), 0);  // NUL-terminated
}

TEST(Layout, InitrdPlacement) {
  const hvm_memmap_table_entry ram[] = {{0, 0x9f000, XEN_HVM_MEMMAP_TYPE_RAM, 0},
                                        {0x100000, 511 * kMiB, XEN_HVM_MEMMAP_TYPE_RAM, 0}};
  // Right after the floor, page aligned.
  auto at = PlaceInitrd(0x2345678, 10 * kMiB, 512 * kMiB, ram);
  ASSERT_TRUE(at) << at.error().message;
  EXPECT_EQ(*at, 0x2346000u);
  // Exactly to the end of RAM fits; a page more does not.
  at = PlaceInitrd(500 * kMiB, 12 * kMiB, 512 * kMiB, ram);
  ASSERT_TRUE(at);
  EXPECT_EQ(*at, 500 * kMiB);
  at = PlaceInitrd(500 * kMiB, 12 * kMiB + 1, 512 * kMiB, ram);
  ASSERT_FALSE(at);
  EXPECT_EQ(at.error().xen_errno, XEN_ENOMEM);
  // Never in a hole or a reserved entry: a floor in the ISA hole moves to the next RAM.
  at = PlaceInitrd(0xa0000, kMiB, 512 * kMiB, ram);
  ASSERT_TRUE(at);
  EXPECT_EQ(*at, 0x100000u);
  // A map that runs past guest RAM doesn't count beyond it.
  at = PlaceInitrd(0x200000, 300 * kMiB, 256 * kMiB, ram);
  EXPECT_FALSE(at);
  // Guest RAM above 1 GiB is out of Linux PVH's early map: refused there.
  const hvm_memmap_table_entry big[] = {{0, 3072 * kMiB, XEN_HVM_MEMMAP_TYPE_RAM, 0}};
  at = PlaceInitrd(900 * kMiB, 100 * kMiB, 3072 * kMiB, big);
  ASSERT_TRUE(at);
  EXPECT_EQ(*at, 900 * kMiB);
  EXPECT_FALSE(PlaceInitrd(900 * kMiB, 200 * kMiB, 3072 * kMiB, big));
  EXPECT_FALSE(PlaceInitrd(0x200000, 0, 512 * kMiB, ram));  // nothing to place
  EXPECT_FALSE(PlaceInitrd(UINT64_MAX - 10, 4096, 512 * kMiB, ram));
  EXPECT_FALSE(PlaceInitrd(0x200000, UINT64_MAX, 512 * kMiB, ram));
}

TEST(Layout, StartInfoAreaLowOrAfterTheImage) {
  const ElfSegment high[] = {{.paddr = 0x1000000, .offset = 0, .filesz = 0, .memsz = kMiB}};
  auto base = PlaceStartInfo(high, kStartInfoAreaSize, 64 * kMiB);
  ASSERT_TRUE(base);
  EXPECT_EQ(*base, kStartInfoLow);
  const ElfSegment low[] = {{.paddr = 0x4000, .offset = 0, .filesz = 0, .memsz = 0x10001}};
  base = PlaceStartInfo(low, kStartInfoAreaSize, 64 * kMiB);
  ASSERT_TRUE(base);
  EXPECT_EQ(*base, 0x15000u);
  EXPECT_FALSE(PlaceStartInfo(low, kStartInfoAreaSize, 0x16000));
}

class LoaderTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kRam = 64 * kMiB;
  LoaderTest() : ram_(kRam) {}
  Result<PvhBoot> Load(const ByteVec& kernel, const ByteVec& initrd, uint64_t ram_size = kRam) {
    return LoadPvhGuest(BootImage{kernel, initrd}, ram_.memory(),
                        BootOptions{.ram_size = ram_size,
                                    .cmdline = "rdinit=/init",
                                    .memory_map = map_,
                                    .rsdp_paddr = 0,
                                    .limits = {}});
  }
  test::TestRam ram_;
  hvm_memmap_table_entry map_[1] = {{0, kRam, XEN_HVM_MEMMAP_TYPE_RAM, 0}};
};

TEST_F(LoaderTest, BzImageAndInitrd) {
  // A kernel whose memsz (bss) runs far past its file bytes: the initrd goes after memsz.
  const ByteVec elf = test::MakePvhElf(0x1000000, 0x345678);
  const ByteVec kernel = test::MakeBzImage(test::Xz(elf));
  ByteVec initrd(5 * kMiB + 123);
  for (size_t i = 0; i < initrd.size(); ++i) initrd[i] = static_cast<uint8_t>(i * 7);
  auto boot = Load(kernel, initrd);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_TRUE(boot->bzimage);
  EXPECT_EQ(boot->compression, Compression::kXz);
  EXPECT_EQ(boot->elf_size, elf.size());
  EXPECT_EQ(boot->entry, 0x1000004u);
  EXPECT_EQ(boot->image_end, 0x1345678u);
  EXPECT_EQ(boot->initrd_gpa, 0x1346000u);
  EXPECT_EQ(boot->initrd_size, initrd.size());
  EXPECT_EQ(0, std::memcmp(ram_.host() + boot->initrd_gpa, initrd.data(), initrd.size()));
  EXPECT_EQ(ram_.host()[0x1000000], 0xab);
  EXPECT_EQ(ram_.host()[0x1345677], 0);  // bss zeroed
  ASSERT_EQ(boot->code.size(), 1u);
  EXPECT_EQ(boot->code[0].gpa, 0x1000000u);
  EXPECT_EQ(boot->code[0].size, 0x10u);
  EXPECT_EQ(boot->start_info_gpa, kStartInfoLow);
  const auto si = ram_.Get<hvm_start_info>(boot->start_info_gpa);
  EXPECT_EQ(si.version, 1u);
  ASSERT_EQ(si.nr_modules, 1u);
  const auto mod = ram_.Get<hvm_modlist_entry>(si.modlist_paddr);
  EXPECT_EQ(mod.paddr, boot->initrd_gpa);
  EXPECT_EQ(mod.size, initrd.size());
  EXPECT_EQ(si.memmap_entries, 1u);
  EXPECT_STREQ(reinterpret_cast<const char*>(ram_.host() + si.cmdline_paddr), "rdinit=/init");
}

TEST_F(LoaderTest, InitrdAfterStartInfoWhenThatFollowsTheImage) {
  // The kernel covers 0x6000: start_info goes on the page after it, the initrd after both.
  const ByteVec elf = test::MakePvhElf(0x1000, 0x10000);
  const ByteVec initrd(4096, 1);
  auto boot = Load(elf, initrd);
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_EQ(boot->start_info_gpa, 0x11000u);
  EXPECT_EQ(boot->initrd_gpa, 0x11000u + kStartInfoAreaSize);
}

TEST_F(LoaderTest, InitrdThatDoesNotFitIsOneLineAndNothingWritten) {
  std::memset(ram_.host(), 0xee, 0x200000);
  const ByteVec elf = test::MakePvhElf(0x100000, 0x2000);
  const ByteVec initrd(kRam - 0x100000, 1);  // RAM minus the first MiB: the kernel is in it
  auto boot = Load(elf, initrd);
  ASSERT_FALSE(boot);
  EXPECT_EQ(boot.error().xen_errno, XEN_ENOMEM);
  EXPECT_STREQ(boot.error().message,
               "the initrd does not fit in guest RAM between the kernel and 1 GiB");
  EXPECT_EQ(ram_.host()[0x100000], 0xee);  // the kernel was not loaded either
  EXPECT_EQ(ram_.host()[kStartInfoLow], 0xee);
}

TEST_F(LoaderTest, PlainElfWithoutInitrd) {
  auto boot = Load(test::MakePvhElf(), {});
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_FALSE(boot->bzimage);
  EXPECT_EQ(boot->initrd_gpa, 0u);
  EXPECT_EQ(ram_.Get<hvm_start_info>(boot->start_info_gpa).nr_modules, 0u);
}

}  // namespace
}  // namespace xenkvm::boot
