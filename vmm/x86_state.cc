// Pure x86 start state; see x86_state.h.
#include "vmm/x86_state.h"

#include <cstring>

#include "abi/platform.h"
#include "xen/cpuid.h"

namespace xenkvm::vmm {

namespace {
constexpr uint32_t kLapicLvt0 = 0x350;
constexpr uint32_t kLvtExtInt = 0x700;  // delivery mode ExtINT, unmasked
constexpr uint64_t kRflagsFixed = 0x2;  // bit 1 always reads as one
constexpr uint64_t kCr0PeEt = 0x11;
constexpr uint16_t kPvhCodeSelector = 0x10;
constexpr uint16_t kPvhDataSelector = 0x18;
constexpr uint16_t kLongCodeSelector = 0x08;
constexpr uint16_t kLongDataSelector = 0x10;
constexpr uint32_t kTssLimit = 0x67;
}  // namespace

kvm_segment FlatSegment(uint16_t selector, uint8_t type, bool code64) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.s = 1;
  s.g = 1;
  s.l = code64 ? 1 : 0;
  s.db = code64 ? 0 : 1;
  return s;
}

kvm_segment TssSegment(uint32_t base, uint32_t limit, uint8_t type) {
  kvm_segment s{};
  s.base = base;
  s.limit = limit;
  s.type = type;
  s.present = 1;
  return s;
}

kvm_segment SegmentFromXen(uint32_t base, uint32_t limit, uint16_t ar) {
  kvm_segment s{};
  s.base = base;
  s.limit = limit;
  s.type = ar & 0xf;
  s.s = (ar >> 4) & 1;
  s.dpl = (ar >> 5) & 3;
  s.present = (ar >> 7) & 1;
  s.avl = (ar >> 8) & 1;
  s.l = (ar >> 9) & 1;
  s.db = (ar >> 10) & 1;
  s.g = (ar >> 11) & 1;
  s.unusable = s.present ? 0 : 1;
  return s;
}

X86State PvhBootState(const kvm_sregs& base, uint32_t entry, uint64_t start_info_gpa) {
  X86State st;
  st.sregs = base;
  st.sregs.cs = FlatSegment(kPvhCodeSelector, kSegCodeExecRead);
  st.sregs.ds = st.sregs.es = st.sregs.fs = st.sregs.gs = st.sregs.ss =
      FlatSegment(kPvhDataSelector, kSegDataReadWrite);
  st.sregs.tr = TssSegment(0, kTssLimit);
  st.sregs.cr0 = kCr0PeEt;
  st.sregs.cr4 = 0;
  st.sregs.efer = 0;
  st.regs.rip = entry;
  st.regs.rbx = start_info_gpa;
  st.regs.rflags = kRflagsFixed;
  return st;
}

X86State StateFromHvmContext(const kvm_sregs& base, const vcpu_hvm_context& ctx) {
  X86State st;
  st.sregs = base;
  kvm_regs& regs = st.regs;
  kvm_sregs& sregs = st.sregs;
  if (ctx.mode == VCPU_HVM_MODE_64B) {
    const auto& r = ctx.cpu_regs.x86_64;
    regs =
        kvm_regs{r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, 0,
                 0,     0,     0,     0,     0,     0,     0,     r.rip, r.rflags | kRflagsFixed};
    sregs.cr0 = r.cr0;
    sregs.cr3 = r.cr3;
    sregs.cr4 = r.cr4;
    sregs.efer = r.efer;
    sregs.cs = FlatSegment(kLongCodeSelector, kSegCodeExecRead, true);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss =
        FlatSegment(kLongDataSelector, kSegDataReadWrite);
    sregs.tr = TssSegment(0, kTssLimit);
  } else {
    const auto& r = ctx.cpu_regs.x86_32;
    regs = kvm_regs{r.eax, r.ebx, r.ecx, r.edx, r.esi, r.edi,
                    r.esp, r.ebp, 0,     0,     0,     0,
                    0,     0,     0,     0,     r.eip, uint64_t{r.eflags} | kRflagsFixed};
    sregs.cr0 = r.cr0;
    sregs.cr3 = r.cr3;
    sregs.cr4 = r.cr4;
    sregs.efer = r.efer;
    sregs.cs = SegmentFromXen(r.cs_base, r.cs_limit, r.cs_ar);
    sregs.ds = SegmentFromXen(r.ds_base, r.ds_limit, r.ds_ar);
    sregs.es = SegmentFromXen(r.es_base, r.es_limit, r.es_ar);
    sregs.ss = SegmentFromXen(r.ss_base, r.ss_limit, r.ss_ar);
    sregs.fs = sregs.gs = sregs.ds;
    sregs.tr = SegmentFromXen(r.tr_base, r.tr_limit, r.tr_ar);
    if (!sregs.tr.present) sregs.tr = TssSegment(0, kTssLimit);
  }
  return st;
}

std::vector<kvm_cpuid_entry2> BuildCpuid(std::span<const kvm_cpuid_entry2> supported,
                                         uint32_t vcpu_id, uint16_t domid) {
  std::vector<kvm_cpuid_entry2> entries;
  for (kvm_cpuid_entry2 e : supported) {
    if (e.function >= XENKVM_CPUID_BASE && e.function < XENKVM_CPUID_BASE + 0x10000) continue;
    if (e.function == 1) e.ebx = (e.ebx & 0x00ffffffu) | (vcpu_id << 24);  // initial APIC id
    if (e.function == 0xb || e.function == 0x1f) e.edx = vcpu_id;          // x2APIC id
    entries.push_back(e);
  }
  for (uint32_t leaf = XENKVM_CPUID_BASE; leaf < XENKVM_CPUID_BASE + xen::kXenCpuidLeaves; ++leaf) {
    const auto r = xen::XenCpuid(leaf, 0, vcpu_id, domid);
    kvm_cpuid_entry2 e{};
    e.function = leaf;
    e.eax = r->eax;
    e.ebx = r->ebx;
    e.ecx = r->ecx;
    e.edx = r->edx;
    if (leaf == XENKVM_CPUID_BASE + 4) e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    entries.push_back(e);
  }
  return entries;
}

void SetLvt0ExtInt(kvm_lapic_state* lapic) {
  const uint32_t lvt0 = kLvtExtInt;
  std::memcpy(&lapic->regs[kLapicLvt0], &lvt0, sizeof(lvt0));
}

uint32_t Lvt0(const kvm_lapic_state& lapic) {
  uint32_t lvt0;
  std::memcpy(&lvt0, &lapic.regs[kLapicLvt0], sizeof(lvt0));
  return lvt0;
}

}  // namespace xenkvm::vmm
