// The Xen hypercall site matcher (boot/hypercall_sites.h): Linux's xen_hypercall_amd/intel pair
// in the shapes 6.1 and 6.12 builds have (and the other forms xen-head.S can assemble to) is
// found and rewritten; every near miss, and every other vmcall/vmmcall, is left alone.
#include "boot/hypercall_sites.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace xenkvm::boot {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint64_t kBase = 0x1000000;  // a kernel's text starts 2 MiB aligned

void Put(Bytes& image, size_t at, const Bytes& bytes) {
  ASSERT_LE(at + bytes.size(), image.size());
  std::memcpy(image.data() + at, bytes.data(), bytes.size());
}

Bytes Rel32(int64_t value) {
  const auto v = static_cast<uint32_t>(static_cast<int32_t>(value));
  return {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)};
}

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Filler that is no padding (push %rbp), so nothing lines up by accident.
Bytes Image(size_t size = 0x400) { return Bytes(size, 0x55); }

// What Debian's 6.1.192 has (no IBT, no call padding, return thunk): xen_hypercall_hvm's tail
// `jz +5; jmp +0x13; nopl (%rax)` at 0x179, amd at 0x180, intel at 0x190, a nopl between.
struct Layout {
  Bytes image;
  size_t amd_insn = 0, intel_insn = 0;
};
Layout Linux61() {
  Layout l{Image()};
  Put(l.image, 0x179, {0x74, 0x05, 0xeb, 0x13, 0x0f, 0x1f, 0x00});
  Put(l.image, 0x180, Cat({{0x0f, 0x01, 0xd9, 0xe9}, Rel32(0x300 - 0x188)}));
  Put(l.image, 0x188, {0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00});
  Put(l.image, 0x190, Cat({{0x0f, 0x01, 0xc1, 0xe9}, Rel32(0x300 - 0x198)}));
  Put(l.image, 0x198, Bytes(8, 0xcc));
  l.amd_insn = 0x180;
  l.intel_insn = 0x190;
  return l;
}

// Debian's 6.12 (IBT, 16 nops of call padding before each function, return thunk): the tail
// `jz; jmp; 11-byte nop` then 16 nops, amd at 0x1e0 (ENDBR64 first), intel at 0x200.
Layout Linux612() {
  Layout l{Image()};
  Put(l.image, 0x1c1, {0x74, 0x1d, 0xeb, 0x3b});
  Put(l.image, 0x1c5, {0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00});
  Put(l.image, 0x1d0, Bytes(16, 0x90));
  Put(l.image, 0x1e0,
      Cat({{0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x01, 0xd9, 0xe9}, Rel32(0x380 - 0x1ec)}));
  Put(l.image, 0x1ec, {0x0f, 0x1f, 0x40, 0x00});
  Put(l.image, 0x1f0, Bytes(16, 0x90));
  Put(l.image, 0x200,
      Cat({{0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x01, 0xc1, 0xe9}, Rel32(0x380 - 0x20c)}));
  Put(l.image, 0x20c, {0x0f, 0x1f, 0x40, 0x00});
  l.amd_insn = 0x1e4;
  l.intel_insn = 0x204;
  return l;
}

void ExpectPair(const Layout& l, uint64_t base = kBase) {
  const auto sites = FindXenHypercallSites(l.image, base);
  ASSERT_EQ(sites.size(), 2u);
  EXPECT_EQ(sites[0].offset, l.amd_insn);
  EXPECT_TRUE(sites[0].vmmcall);
  EXPECT_EQ(sites[1].offset, l.intel_insn);
  EXPECT_FALSE(sites[1].vmmcall);
}

void ExpectNone(const Bytes& image, uint64_t base = kBase) {
  EXPECT_TRUE(FindXenHypercallSites(image, base).empty());
  Bytes copy = image;
  EXPECT_EQ(RewriteXenHypercallSites(copy, base), 0u);
  EXPECT_EQ(copy, image);
}

TEST(HypercallSites, FindsLinux61Pair) { ExpectPair(Linux61()); }
TEST(HypercallSites, FindsLinux612Pair) { ExpectPair(Linux612()); }

TEST(HypercallSites, RewritesExactlyTheTwoInstructions) {
  for (const Layout& l : {Linux61(), Linux612()}) {
    Bytes image = l.image;
    EXPECT_EQ(RewriteXenHypercallSites(image, kBase), 2u);
    size_t changed = 0;
    for (size_t i = 0; i < image.size(); ++i) changed += image[i] != l.image[i];
    EXPECT_EQ(changed, 6u);
    EXPECT_EQ(Bytes(image.begin() + l.amd_insn, image.begin() + l.amd_insn + 3),
              (Bytes{0xe7, 0xe0, 0x90}));
    EXPECT_EQ(Bytes(image.begin() + l.intel_insn, image.begin() + l.intel_insn + 3),
              (Bytes{0xe7, 0xe0, 0x90}));
    // Rewritten, the pair is no longer one: a second pass finds nothing.
    EXPECT_EQ(RewriteXenHypercallSites(image, kBase), 0u);
  }
}

// The other forms the same source can assemble to: `ret; int3` (SLS, no return thunk) and
// plain `ret`, rel32 branches in the dispatcher, with and without ENDBR64 and call padding.
struct Shape {
  bool endbr;
  bool call_padding;
  int ret;  // 0: jmp rel32, 1: ret; int3, 2: ret
  bool tail_rel32;
};
Layout Build(const Shape& s) {
  Layout l{Image()};
  const size_t amd = 0x200, intel = amd + (s.call_padding ? 32 : 16);
  const Bytes endbr = s.endbr ? Bytes{0xf3, 0x0f, 0x1e, 0xfa} : Bytes{};
  auto body = [&](size_t at, uint8_t insn_last) {
    const size_t ret_at = at + endbr.size() + 3;
    Bytes ret = s.ret == 0   ? Cat({{0xe9}, Rel32(0x380 - static_cast<int64_t>(ret_at + 5))})
                : s.ret == 1 ? Bytes{0xc3, 0xcc}
                             : Bytes{0xc3};
    Put(l.image, at, Cat({endbr, {0x0f, 0x01, insn_last}, ret}));
    const size_t end = ret_at + ret.size();
    Put(l.image, end, Bytes(at + 16 - end, 0x90));
    return at + endbr.size();
  };
  if (s.call_padding) {
    Put(l.image, amd - 16, Bytes(16, 0x90));
    Put(l.image, intel - 16, Bytes(16, 0x90));
  }
  l.amd_insn = body(amd, 0xd9);
  l.intel_insn = body(intel, 0xc1);
  const size_t tail_end = (s.call_padding ? amd - 16 : amd) - 3;
  Put(l.image, tail_end, {0x0f, 0x1f, 0x00});
  if (s.tail_rel32) {
    const size_t jmp = tail_end - 5, jz = jmp - 6;
    Put(l.image, jmp, Cat({{0xe9}, Rel32(int64_t(intel) - int64_t(tail_end))}));
    Put(l.image, jz, Cat({{0x0f, 0x84}, Rel32(int64_t(amd) - int64_t(jmp))}));
  } else {
    const size_t jmp = tail_end - 2, jz = jmp - 2;
    Put(l.image, jmp, {0xeb, uint8_t(intel - tail_end)});
    Put(l.image, jz, {0x74, uint8_t(amd - jmp)});
  }
  return l;
}

TEST(HypercallSites, FindsEveryFormOfThePair) {
  for (bool endbr : {false, true})
    for (bool padding : {false, true})
      for (int ret : {0, 1, 2})
        for (bool rel32 : {false, true}) {
          SCOPED_TRACE(testing::Message() << "endbr " << endbr << " padding " << padding << " ret "
                                          << ret << " rel32 " << rel32);
          ExpectPair(Build({endbr, padding, ret, rel32}));
        }
}

TEST(HypercallSites, NoDispatcherTailNoRewrite) {
  Layout l = Linux61();
  Put(l.image, 0x179, Bytes(4, 0x55));
  ExpectNone(l.image);
  l = Linux612();
  Put(l.image, 0x1c1, {0x74, 0x1d, 0xeb, 0x3a});  // jmp one byte short of intel
  ExpectNone(l.image);
  l = Linux612();
  Put(l.image, 0x1c1, {0x75, 0x1d});  // jnz: not the dispatcher's jz
  ExpectNone(l.image);
  l = Linux612();
  Put(l.image, 0x1d8, {0x55});  // something that is no padding between the tail and amd
  ExpectNone(l.image);
}

TEST(HypercallSites, ReturnsThatDifferAreNoPair) {
  Layout l = Linux61();
  Put(l.image, 0x194, Rel32(0x304 - 0x198));  // intel returns elsewhere
  ExpectNone(l.image);
  l = Linux612();
  Put(l.image, 0x207, {0xc3, 0xcc, 0x90, 0x90, 0x90});  // intel `ret; int3`, amd a thunk jump
  ExpectNone(l.image);
  l = Linux612();
  Put(l.image, 0x200, {0x90, 0x90, 0x90, 0x90});  // intel without ENDBR64, amd with
  ExpectNone(l.image);
}

TEST(HypercallSites, WrongOrderOrPlaceIsNoPair) {
  Layout l = Linux61();
  Put(l.image, 0x182, {0xc1});  // vmcall first
  Put(l.image, 0x192, {0xd9});  // vmmcall second
  ExpectNone(l.image);
  l = Linux61();
  Put(l.image, 0x192, {0xd9});  // two vmmcalls
  ExpectNone(l.image);
  ExpectNone(Linux61().image, kBase + 4);  // functions not 16-byte aligned
  ExpectNone(Linux612().image, kBase + 8);
  l = Linux61();
  Put(l.image, 0x18c, {0x55});  // no padding between the bodies
  ExpectNone(l.image);
  l = Linux61();
  Put(l.image, 0x183, {0xe8});  // call, not jmp
  ExpectNone(l.image);
}

TEST(HypercallSites, PairTooFarApartIsNoPair) {
  Layout l{Image()};
  // amd at 0x200, intel 80 bytes later with nops between: beyond any function alignment.
  Put(l.image, 0x1f9, {0x74, 0x05, 0xeb, 0x53, 0x0f, 0x1f, 0x00});
  Put(l.image, 0x200, {0x0f, 0x01, 0xd9, 0xc3});
  Put(l.image, 0x204, Bytes(76, 0x90));
  Put(l.image, 0x250, {0x0f, 0x01, 0xc1, 0xc3});
  ExpectNone(l.image);
}

TEST(HypercallSites, IsolatedVmcallsStay) {
  Bytes image = Image();
  // kvm_hypercall1-like inline sites (mov $nr,%eax; vmmcall / vmcall; pop; jmp thunk).
  Put(image, 0x40, Cat({{0xb8, 0x0c, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xd9, 0x5b, 0xe9}, Rel32(0)}));
  Put(image, 0x80, Cat({{0xb8, 0x05, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xc1, 0x5b, 0xe9}, Rel32(0)}));
  // A lone aligned function body of each kind, with nops around but no partner.
  Put(image, 0x100, Cat({{0x0f, 0x01, 0xd9, 0xe9}, Rel32(0x40)}));
  Put(image, 0x108, Bytes(8, 0x90));
  Put(image, 0x140, Cat({{0x0f, 0x01, 0xc1, 0xe9}, Rel32(0x40)}));
  // KVM's alternative pair in .altinstr_replacement: vmcall right before vmmcall.
  Put(image, 0x1a0, {0x0f, 0x01, 0xc1, 0x0f, 0x01, 0xd9});
  ExpectNone(image);
}

TEST(HypercallSites, TruncatedImagesAreSafe) {
  for (const Layout& l : {Linux61(), Linux612()}) {
    for (size_t cut = 0; cut <= l.image.size(); ++cut) {
      const std::span<const uint8_t> head(l.image.data(), cut);
      const size_t n = FindXenHypercallSites(head, kBase).size();
      EXPECT_TRUE(n == 0 || (n == 2 && cut > l.intel_insn + 3)) << cut;
      const std::span<const uint8_t> tail(l.image.data() + cut, l.image.size() - cut);
      const size_t m = FindXenHypercallSites(tail, kBase + cut).size();
      EXPECT_TRUE(m == 0 || m == 2) << cut;
    }
  }
  EXPECT_TRUE(FindXenHypercallSites({}, 0).empty());
}

TEST(HypercallSites, TwoKernelsTwoPairs) {
  Layout a = Linux61();
  Bytes image = a.image;
  const Bytes second = Linux612().image;
  image.insert(image.end(), second.begin(), second.end());  // 0x400: keeps the alignment
  EXPECT_EQ(FindXenHypercallSites(image, kBase).size(), 4u);
}

// Real kernels: XENKVM_TEST_VMLINUX=path[:path...] (an ELF vmlinux, e.g. unpacked from a Debian
// linux-image's vmlinuz) must each have exactly one pair in its executable segments.
size_t CountInElf(const Bytes& elf) {
  Elf64_Ehdr eh;
  if (elf.size() < sizeof(eh)) return SIZE_MAX;
  std::memcpy(&eh, elf.data(), sizeof(eh));
  size_t count = 0;
  for (size_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    const size_t at = eh.e_phoff + i * sizeof(ph);
    if (at + sizeof(ph) > elf.size()) return SIZE_MAX;
    std::memcpy(&ph, elf.data() + at, sizeof(ph));
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    if (ph.p_offset > elf.size() || ph.p_filesz > elf.size() - ph.p_offset) return SIZE_MAX;
    for (const HypercallSite& site :
         FindXenHypercallSites({elf.data() + ph.p_offset, ph.p_filesz}, ph.p_paddr)) {
      std::printf("  %s at %#llx\n", site.vmmcall ? "vmmcall" : "vmcall",
                  static_cast<unsigned long long>(ph.p_vaddr + site.offset));
      ++count;
    }
  }
  return count;
}

TEST(HypercallSites, RealKernelsHaveExactlyOnePair) {
  const char* paths = std::getenv("XENKVM_TEST_VMLINUX");
  if (paths == nullptr || *paths == 0) GTEST_SKIP() << "XENKVM_TEST_VMLINUX not set";
  std::stringstream list(paths);
  for (std::string path; std::getline(list, path, ':');) {
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in) << path;
    const Bytes elf{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const size_t n = CountInElf(elf);
    std::printf("%s: %zu Xen hypercall sites\n", path.c_str(), n);
    EXPECT_EQ(n, 2u) << path;
  }
}

}  // namespace
}  // namespace xenkvm::boot
