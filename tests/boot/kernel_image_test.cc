// boot/bzimage and boot/kernel_image: a synthetic bzImage's setup header is parsed and its
// payload found, a bad header is refused field by field, a bzImage of every payload format
// unpacks to the PVH ELF inside; and, when XENKVM_TEST_VMLINUZ names some (colon-separated,
// e.g. Debian's /boot/vmlinuz-*), real kernels unpack, have a PVH entry and their two Xen
// hypercall sites, and load with an initrd.
#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "boot/bzimage.h"
#include "boot/elf_image.h"
#include "boot/hypercall_sites.h"
#include "boot/kernel_image.h"
#include "boot/pvh_loader.h"
#include "tests/boot/codecs.h"
#include "tests/boot/images.h"

namespace xenkvm::boot {
namespace {

using test::ByteVec;

void Put32(ByteVec& v, size_t at, uint32_t x) { std::memcpy(v.data() + at, &x, 4); }

TEST(BzImage, SetupHeaderIsParsed) {
  const ByteVec payload = test::Zstd(test::SamplePayload(4096));
  const ByteVec img = test::MakeBzImage(payload, 27);
  ASSERT_TRUE(IsBzImage(img));
  auto h = ParseSetupHeader(img);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->version, 0x020f);
  EXPECT_EQ(h->setup_sects, 27u);
  EXPECT_EQ(h->protected_mode_offset, 28u * 512);
  EXPECT_EQ(h->payload_offset, 28u * 512 + 0x4e0);
  EXPECT_EQ(h->payload_length, payload.size());
  EXPECT_EQ(0, std::memcmp(img.data() + h->payload_offset, payload.data(), payload.size()));
  // setup_sects 0 stands for 4.
  h = ParseSetupHeader(test::MakeBzImage(payload, 0));
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->protected_mode_offset, 5u * 512);
}

TEST(BzImage, BadHeadersAreRefused) {
  const ByteVec payload = test::Zstd(test::SamplePayload(4096));
  const ByteVec good = test::MakeBzImage(payload);
  auto refused = [](const ByteVec& img) {
    auto h = ParseSetupHeader(img);
    return !h && h.error().xen_errno == XEN_EINVAL;
  };
  ByteVec img = good;
  img[test::kHdrS] = 'X';  // no magic
  EXPECT_FALSE(IsBzImage(img));
  EXPECT_TRUE(refused(img));
  EXPECT_TRUE(refused(test::MakeBzImage(payload, 27, 0x0207)));       // no payload fields yet
  EXPECT_TRUE(refused(ByteVec(good.begin(), good.begin() + 0x240)));  // header cut short
  img = good;
  img[test::kSetupSects] = 0xff;  // protected-mode part past the end
  img.resize(0x1000);
  EXPECT_TRUE(refused(img));
  img = good;
  Put32(img, test::kPayloadOffset, 0xfffffff0);  // payload past the end
  EXPECT_TRUE(refused(img));
  img = good;
  Put32(img, test::kPayloadLength, static_cast<uint32_t>(payload.size() + 0x1000));
  EXPECT_TRUE(refused(img));
  img = good;
  Put32(img, test::kPayloadLength, 3);  // too short to be anything
  EXPECT_TRUE(refused(img));
}

class BzImageOfEachFormat : public ::testing::TestWithParam<Compression> {};

TEST_P(BzImageOfEachFormat, UnpacksToThePvhElf) {
  const ByteVec elf = test::MakePvhElf();
  const ByteVec img = test::MakeBzImage(test::Compress(GetParam(), elf));
  auto k = UnpackKernel(img);
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_TRUE(k->bzimage);
  EXPECT_EQ(k->compression, GetParam());
  ASSERT_EQ(k->elf.size(), elf.size());
  EXPECT_EQ(0, std::memcmp(k->elf.data(), elf.data(), elf.size()));
  auto parsed = ParseElfImage(k->elf);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->pvh_entry, 0x100004u);
}

INSTANTIATE_TEST_SUITE_P(Formats, BzImageOfEachFormat, ::testing::ValuesIn(test::kAllFormats),
                         test::FormatName);

TEST(KernelImage, PlainElfIsUsedInPlace) {
  const ByteVec elf = test::MakePvhElf();
  auto k = UnpackKernel(elf);
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_FALSE(k->bzimage);
  EXPECT_EQ(k->elf.data(), elf.data());
  EXPECT_EQ(k->owned.size(), 0u);
}

TEST(KernelImage, OtherFilesGetOneLine) {
  const ByteVec junk(8192, 0x11);
  auto k = UnpackKernel(junk);
  ASSERT_FALSE(k);
  EXPECT_STREQ(k.error().message, "not an ELF file nor a bzImage");
  // A bzImage whose payload is not an ELF (e.g. some other kernel's).
  k = UnpackKernel(test::MakeBzImage(test::Gzip(test::SamplePayload(4096))));
  ASSERT_FALSE(k);
  EXPECT_STREQ(k.error().message, "bzImage payload is not an ELF vmlinux");
  // A bzImage whose payload is corrupt: the decoder's line.
  ByteVec packed = test::Xz(test::MakePvhElf());
  packed[packed.size() / 2] ^= 0xff;
  k = UnpackKernel(test::MakeBzImage(packed));
  ASSERT_FALSE(k);
  EXPECT_STREQ(k.error().message, "xz kernel: corrupt compressed data");
}

ByteVec ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return ByteVec{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Real kernels: XENKVM_TEST_VMLINUZ=path[:path...], each a bzImage (Debian's vmlinuz).
TEST(KernelImage, RealVmlinuzUnpacksAndLoads) {
  const char* paths = std::getenv("XENKVM_TEST_VMLINUZ");
  if (paths == nullptr || *paths == 0)
    GTEST_SKIP() << "XENKVM_TEST_VMLINUZ not set (colon-separated bzImage paths, e.g. "
                    "/boot/vmlinuz-*)";
  std::stringstream list(paths);
  for (std::string path; std::getline(list, path, ':');) {
    SCOPED_TRACE(path);
    const ByteVec file = ReadFile(path);
    ASSERT_FALSE(file.empty());
    ASSERT_TRUE(IsBzImage(file));
    const auto header = ParseSetupHeader(file);
    ASSERT_TRUE(header) << header.error().message;
    auto k = UnpackKernel(file);
    ASSERT_TRUE(k) << k.error().message;
    auto elf = ParseElfImage(k->elf);
    ASSERT_TRUE(elf) << elf.error().message;
    EXPECT_NE(elf->pvh_entry, 0u);
    std::printf("%s: protocol %#x, %s payload %" PRIu64 " bytes -> %zu-byte ELF, PVH entry %#x\n",
                path.c_str(), header->version, CompressionName(k->compression),
                header->payload_length, k->elf.size(), elf->pvh_entry);

    // Loaded into 512 MiB with an initrd: the entry is in a loaded segment, the initrd after
    // the kernel below 1 GiB, and the executable segments hold Linux's two hypercall sites.
    test::TestRam ram(512u << 20);
    ASSERT_NE(ram.host(), nullptr);
    const ByteVec initrd(3u << 20, 0x5a);
    const hvm_memmap_table_entry map[] = {{0, ram.size(), XEN_HVM_MEMMAP_TYPE_RAM, 0}};
    auto boot = LoadPvhGuest(BootImage{file, initrd}, ram.memory(),
                             BootOptions{.ram_size = ram.size(),
                                         .cmdline = "console=hvc0",
                                         .memory_map = map,
                                         .rsdp_paddr = 0,
                                         .limits = {}});
    ASSERT_TRUE(boot) << boot.error().message;
    EXPECT_EQ(boot->entry, elf->pvh_entry);
    EXPECT_GE(boot->initrd_gpa, boot->image_end);
    EXPECT_EQ(boot->initrd_gpa % 4096, 0u);
    EXPECT_LE(boot->initrd_gpa + initrd.size(), uint64_t{1} << 30);
    EXPECT_EQ(ram.host()[boot->initrd_gpa + initrd.size() - 1], 0x5a);
    size_t sites = 0;
    for (const PvhBoot::Range& r : boot->code)
      sites += FindXenHypercallSites({ram.host() + r.gpa, r.size}, r.gpa).size();
    std::printf("  image end %#" PRIx64 ", initrd at %#" PRIx64 ", %zu hypercall sites\n",
                boot->image_end, boot->initrd_gpa, sites);
    EXPECT_EQ(sites, 2u);
  }
}

}  // namespace
}  // namespace xenkvm::boot
