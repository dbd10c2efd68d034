// The x86 start state as KVM structs, without KVM: PVH entry (Xen docs/misc/pvh.pandoc),
// VCPUOP_initialise's contexts in both modes, Xen's segment attribute unpacking, the CPUID
// table and LVT0.
#include "vmm/x86_state.h"

#include <gtest/gtest.h>

#include "abi/platform.h"

namespace xenkvm::vmm {
namespace {

kvm_sregs ResetSregs() {
  kvm_sregs s{};
  s.apic_base = 0xfee00900;  // carried over untouched
  s.idt.limit = 0xffff;
  s.cr0 = 0x60000010;
  s.efer = 0x500;
  return s;
}

TEST(X86State, PvhEntryIsFlat32BitProtectedModeWithoutPaging) {
  const X86State st = PvhBootState(ResetSregs(), 0x100200, 0x7000);
  EXPECT_EQ(st.regs.rip, 0x100200u);
  EXPECT_EQ(st.regs.rbx, 0x7000u);
  EXPECT_EQ(st.regs.rflags, 0x2u);
  EXPECT_EQ(st.sregs.cr0, 0x11u);  // PE | ET, no PG
  EXPECT_EQ(st.sregs.cr4, 0u);
  EXPECT_EQ(st.sregs.efer, 0u);
  EXPECT_EQ(st.sregs.apic_base, 0xfee00900u);
  EXPECT_EQ(st.sregs.idt.limit, 0xffff);
  for (const kvm_segment* s :
       {&st.sregs.cs, &st.sregs.ds, &st.sregs.ss, &st.sregs.es, &st.sregs.fs, &st.sregs.gs}) {
    EXPECT_EQ(s->base, 0u);
    EXPECT_EQ(s->limit, 0xffffffffu);
    EXPECT_EQ(s->present, 1);
    EXPECT_EQ(s->db, 1);  // 32-bit
    EXPECT_EQ(s->l, 0);
    EXPECT_EQ(s->g, 1);
  }
  EXPECT_EQ(st.sregs.cs.type, kSegCodeExecRead);
  EXPECT_EQ(st.sregs.ds.type, kSegDataReadWrite);
  EXPECT_EQ(st.sregs.tr.present, 1);
  EXPECT_EQ(st.sregs.tr.type, kSegTssBusy);
}

TEST(X86State, FlatSegmentIn64BitModeClearsDb) {
  const kvm_segment cs = FlatSegment(0x8, kSegCodeExecRead, true);
  EXPECT_EQ(cs.l, 1);
  EXPECT_EQ(cs.db, 0);  // L and D/B together are reserved
  EXPECT_EQ(cs.selector, 0x8);
}

TEST(X86State, XenSegmentAttributesUnpack) {
  // type 0xb, S, DPL 3, P, AVL, L 0, D/B, G: 0xb | 1<<4 | 3<<5 | 1<<7 | 1<<8 | 1<<10 | 1<<11
  const kvm_segment s = SegmentFromXen(0x1000, 0xfffff, 0xdfb);
  EXPECT_EQ(s.base, 0x1000u);
  EXPECT_EQ(s.limit, 0xfffffu);
  EXPECT_EQ(s.type, 0xb);
  EXPECT_EQ(s.s, 1);
  EXPECT_EQ(s.dpl, 3);
  EXPECT_EQ(s.present, 1);
  EXPECT_EQ(s.avl, 1);
  EXPECT_EQ(s.l, 0);
  EXPECT_EQ(s.db, 1);
  EXPECT_EQ(s.g, 1);
  EXPECT_EQ(s.unusable, 0);
  EXPECT_EQ(SegmentFromXen(0, 0, 0x13).unusable, 1);  // not present
}

TEST(X86State, HvmContext64BitTakesRegistersAndFlatSegments) {
  vcpu_hvm_context ctx{};
  ctx.mode = VCPU_HVM_MODE_64B;
  ctx.cpu_regs.x86_64.rip = 0xffffffff81000000ull;
  ctx.cpu_regs.x86_64.rsp = 0x8000;
  ctx.cpu_regs.x86_64.rdi = 7;
  ctx.cpu_regs.x86_64.rflags = 0x200;
  ctx.cpu_regs.x86_64.cr0 = 0x80000011;
  ctx.cpu_regs.x86_64.cr3 = 0x5000;
  ctx.cpu_regs.x86_64.cr4 = 0x20;
  ctx.cpu_regs.x86_64.efer = 0x500;
  const X86State st = StateFromHvmContext(ResetSregs(), ctx);
  EXPECT_EQ(st.regs.rip, 0xffffffff81000000ull);
  EXPECT_EQ(st.regs.rsp, 0x8000u);
  EXPECT_EQ(st.regs.rdi, 7u);
  EXPECT_EQ(st.regs.rflags, 0x202u);  // bit 1 forced
  EXPECT_EQ(st.sregs.cr3, 0x5000u);
  EXPECT_EQ(st.sregs.efer, 0x500u);
  EXPECT_EQ(st.sregs.cs.l, 1);
  EXPECT_EQ(st.sregs.ss.l, 0);
  EXPECT_EQ(st.sregs.apic_base, 0xfee00900u);
}

TEST(X86State, HvmContext32BitTakesXenSegments) {
  vcpu_hvm_context ctx{};
  ctx.mode = VCPU_HVM_MODE_32B;
  auto& r = ctx.cpu_regs.x86_32;
  r.eip = 0x100000;
  r.ebx = 0x1234;
  r.eflags = 0;
  r.cr0 = 0x11;
  r.cs_limit = 0xffffffff;
  r.cs_ar = 0xc9b;  // code, S, P, D/B, G
  r.ds_limit = 0xffffffff;
  r.ds_ar = 0xc93;
  r.ss_limit = 0xffffffff;
  r.ss_ar = 0xc93;
  r.es_ar = 0xc93;
  r.tr_ar = 0;  // absent: a busy TSS is made up
  const X86State st = StateFromHvmContext(ResetSregs(), ctx);
  EXPECT_EQ(st.regs.rip, 0x100000u);
  EXPECT_EQ(st.regs.rbx, 0x1234u);
  EXPECT_EQ(st.regs.rflags, 0x2u);
  EXPECT_EQ(st.sregs.cs.type, 0xb);
  EXPECT_EQ(st.sregs.cs.db, 1);
  EXPECT_EQ(st.sregs.ds.type, 0x3);
  EXPECT_EQ(st.sregs.fs.type, st.sregs.ds.type);  // fs/gs copy ds
  EXPECT_EQ(st.sregs.tr.present, 1);
  EXPECT_EQ(st.sregs.tr.type, kSegTssBusy);
}

TEST(X86State, CpuidSetsApicIdsAndReplacesHypervisorLeaves) {
  std::vector<kvm_cpuid_entry2> supported(4);
  supported[0].function = 1;
  supported[0].ebx = 0xaa123456;
  supported[1].function = 0xb;
  supported[2].function = XENKVM_CPUID_BASE;  // KVM's own signature: dropped
  supported[2].ebx = 0x4b4d564b;
  supported[3].function = 7;
  supported[3].ebx = 0x99;
  const auto table = BuildCpuid(supported, 3, 0);
  ASSERT_EQ(table.size(), 3u + 5u);      // leaves 1, 0xb, 7 and Xen's five
  EXPECT_EQ(table[0].ebx, 0x03123456u);  // APIC id in bits 31:24
  EXPECT_EQ(table[1].edx, 3u);           // x2APIC id
  EXPECT_EQ(table[2].ebx, 0x99u);
  EXPECT_EQ(table[3].function, XENKVM_CPUID_BASE);
  EXPECT_EQ(table[3].ebx, 0x566e6558u);  // "XenV"
  EXPECT_EQ(table[7].function, XENKVM_CPUID_BASE + 4);
  EXPECT_EQ(table[7].flags, static_cast<uint32_t>(KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
}

TEST(X86State, Lvt0BecomesUnmaskedExtInt) {
  kvm_lapic_state lapic{};
  lapic.regs[0x350 + 2] = 0x1;  // masked (bit 16)
  SetLvt0ExtInt(&lapic);
  EXPECT_EQ(Lvt0(lapic), 0x700u);
}

}  // namespace
}  // namespace xenkvm::vmm
