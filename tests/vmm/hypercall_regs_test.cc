// Hypercall register decoding (Xen's hypercall ABI): 64-bit callers in rdi/rsi/rdx/r10/r8,
// compat callers in ebx/ecx/edx/esi/edi (upper halves dropped), mode from EFER.LMA and CS.L,
// CPL from SS.DPL, and the result truncated to eax for compat callers.
#include "vmm/hypercall_regs.h"

#include <gtest/gtest.h>

#include "xen/hypercall_page.h"

namespace xenkvm::vmm {
namespace {

kvm_regs Regs() {
  kvm_regs r{};
  r.rbx = 0xaaaa'0000'0000'0001ull;
  r.rcx = 0xaaaa'0000'0000'0002ull;
  r.rdx = 0xaaaa'0000'0000'0003ull;
  r.rsi = 0xaaaa'0000'0000'0004ull;
  r.rdi = 0xaaaa'0000'0000'0005ull;
  r.r10 = 0xaaaa'0000'0000'0006ull;
  r.r8 = 0xaaaa'0000'0000'0007ull;
  r.r9 = 0xaaaa'0000'0000'0008ull;
  return r;
}

TEST(HypercallRegs, LongModeUses64BitConvention) {
  kvm_sregs s{};
  s.efer = kEferLma;
  s.cs.l = 1;
  const auto call = DecodeHypercall(2, 32, Regs(), s);
  EXPECT_FALSE(call.compat);
  EXPECT_EQ(call.vcpu, 2u);
  EXPECT_EQ(call.nr, 32u);
  const std::array<uint64_t, 5> want = {0xaaaa'0000'0000'0005ull, 0xaaaa'0000'0000'0004ull,
                                        0xaaaa'0000'0000'0003ull, 0xaaaa'0000'0000'0006ull,
                                        0xaaaa'0000'0000'0007ull};
  EXPECT_EQ(call.args, want);
}

TEST(HypercallRegs, ProtectedAndCompatibilityModeUse32BitConvention) {
  kvm_sregs legacy{};  // no long mode
  kvm_sregs compat_mode{};
  compat_mode.efer = kEferLma;  // long mode, but a 32-bit code segment
  for (const kvm_sregs& s : {legacy, compat_mode}) {
    const auto call = DecodeHypercall(0, 29, Regs(), s);
    EXPECT_TRUE(call.compat);
    const std::array<uint64_t, 5> want = {1, 2, 3, 4, 5};
    EXPECT_EQ(call.args, want);
  }
}

TEST(HypercallRegs, CplIsSsDpl) {
  kvm_sregs s{};
  s.ss.dpl = 3;
  EXPECT_EQ(DecodeHypercall(0, 0, Regs(), s).cpl, 3);
  s.ss.dpl = 0;
  EXPECT_EQ(DecodeHypercall(0, 0, Regs(), s).cpl, 0);
}

TEST(HypercallRegs, CompatResultIsZeroExtendedEax) {
  EXPECT_EQ(EncodeHypercallResult(false, -22), static_cast<uint64_t>(-22L));
  EXPECT_EQ(EncodeHypercallResult(true, -22), 0xffffffeau);
  EXPECT_EQ(EncodeHypercallResult(true, 5), 5u);
}

// The stub's `ret`, done by the VMM: a 64-bit caller pops 8 bytes at rsp.
TEST(StubReturn, LongModePopsEightBytesAtRsp) {
  kvm_sregs s{};
  s.efer = kEferLma;
  s.cs.l = 1;
  kvm_regs r{};
  r.rsp = 0xffff'8000'0000'1ff8ull;
  r.rip = 0xffff'8000'0020'0040ull;  // slot 2 of a page at ...200000
  const ReturnSlot slot = StubReturnSlot(r, s);
  EXPECT_EQ(slot.gva, 0xffff'8000'0000'1ff8ull);
  EXPECT_EQ(slot.size, 8u);
  CompleteStubReturn(r, s, 0xffff'8000'0010'1234ull);
  EXPECT_EQ(r.rip, 0xffff'8000'0010'1234ull);
  EXPECT_EQ(r.rsp, 0xffff'8000'0000'2000ull);
}

// A 32-bit caller pops 4 bytes at the linear address ss.base + esp; esp wraps in 32 bits and
// the return address is zero-extended.
TEST(StubReturn, CompatModePopsFourBytesAtSsBasePlusEsp) {
  kvm_sregs s{};
  s.ss.base = 0x1000;
  kvm_regs r{};
  r.rsp = 0xdead'0000'0000'0ff0ull;  // upper half: stale, not part of esp
  const ReturnSlot slot = StubReturnSlot(r, s);
  EXPECT_EQ(slot.gva, 0x1ff0u);
  EXPECT_EQ(slot.size, 4u);
  CompleteStubReturn(r, s, 0xffff'ffff'0010'0000ull);
  EXPECT_EQ(r.rip, 0x0010'0000u);
  EXPECT_EQ(r.rsp, 0xdead'0000'0000'0ff4ull);

  r.rsp = 0xffff'fffcull;  // the pop wraps esp to 0
  CompleteStubReturn(r, s, 0x2000);
  EXPECT_EQ(r.rsp, 0u);
  s.ss.base = 0xffff'f000u;
  r.rsp = 0x2000;  // linear address wraps at 4 GiB
  EXPECT_EQ(StubReturnSlot(r, s).gva, 0x1000u);
}

// Where each kind of KVM leaves rip at the stub's exit: at the `out` (hardware KVM), or 2 bytes
// past it (PVM). Either way the trap starts at the slot, which names the hypercall; read the
// other way, the rip is not a slot start and the number would be taken from eax instead.
TEST(HypercallTrap, EachKindOfKvmFindsTheStubSlot) {
  xen::HypercallPageSet pages;
  pages.Add(0x10'1000);
  constexpr uint64_t kSlot29 = 0x10'1000 + 29 * XENKVM_HYPERCALL_STUB_SIZE;
  const uint64_t at_rip = kSlot29;                                   // hardware KVM
  const uint64_t past_rip = kSlot29 + XENKVM_HYPERCALL_TRAP_LENGTH;  // PVM
  EXPECT_EQ(pages.Slot(HypercallTrapRip(at_rip, kvm::PioExitRip::kAtInstruction)), 29);
  EXPECT_EQ(pages.Slot(HypercallTrapRip(past_rip, kvm::PioExitRip::kPastInstruction)), 29);
  EXPECT_EQ(pages.Slot(HypercallTrapRip(past_rip, kvm::PioExitRip::kAtInstruction)), -1);
  EXPECT_EQ(pages.Slot(HypercallTrapRip(at_rip, kvm::PioExitRip::kPastInstruction)), -1);
  // Slot 0: on PVM rip is past the page's first stub, still in the page.
  EXPECT_EQ(pages.Slot(HypercallTrapRip(0x10'1002, kvm::PioExitRip::kPastInstruction)), 0);
}

// An inline trap (no page; Linux's rewritten hypercall sites): the `out` that a snapshot must
// re-run is where the trap starts on either kind.
TEST(HypercallTrap, InlineTrapStartIsTheOutOnEitherKind) {
  EXPECT_EQ(HypercallTrapRip(0xffff'ffff'8100'2000ull, kvm::PioExitRip::kAtInstruction),
            0xffff'ffff'8100'2000ull);
  EXPECT_EQ(HypercallTrapRip(0xffff'ffff'8100'2002ull, kvm::PioExitRip::kPastInstruction),
            0xffff'ffff'8100'2000ull);
}

// The VMM completes the stub's `ret` the same way on both kinds: rip to the return address.
// (Hardware KVM skips the `out` on re-entry only if rip still points at it; PVM is already
// past it. Moving rip is right for both.)
TEST(HypercallTrap, StubReturnIsTheSameFromEitherExitRip) {
  kvm_sregs s{};
  s.efer = kEferLma;
  s.cs.l = 1;
  for (uint64_t exit_rip : {0x10'1000ull + 64, 0x10'1000ull + 66}) {
    kvm_regs r{};
    r.rip = exit_rip;
    r.rsp = 0x8000;
    CompleteStubReturn(r, s, 0x20'0000);
    EXPECT_EQ(r.rip, 0x20'0000u);
    EXPECT_EQ(r.rsp, 0x8008u);
  }
}

}  // namespace
}  // namespace xenkvm::vmm
