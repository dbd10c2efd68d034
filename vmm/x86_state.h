// The x86 state a vCPU starts from, as pure functions (input -> KVM structs, no ioctl): flat
// and TSS segments, the PVH entry state (Xen docs/misc/pvh.pandoc), the state VCPUOP_initialise
// asks for (vcpu_hvm_context, xen/hvm/hvm_vcpu.h), the CPUID table with Xen's leaves
// (xen/arch-x86/cpuid.h) and LVT0 set to ExtINT. VcpuRunner applies them; tests check them
// without KVM, and the kvm/ tests use them to set up their own tiny guests.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

extern "C" {
#include <xen/hvm/hvm_vcpu.h>
#include <xen/xen.h>
}

namespace xenkvm::vmm {

inline constexpr uint8_t kSegCodeExecRead = 0xb;   // code, execute/read, accessed
inline constexpr uint8_t kSegDataReadWrite = 0x3;  // data, read/write, accessed
inline constexpr uint8_t kSegTssBusy = 0xb;        // 32/64-bit TSS, busy

// A present, flat (base 0, 4 GiB, page-granular) code or data segment; 64-bit code when code64.
kvm_segment FlatSegment(uint16_t selector, uint8_t type, bool code64 = false);
// A present system segment (the TSS) VMX entry insists on.
kvm_segment TssSegment(uint32_t base, uint32_t limit, uint8_t type = kSegTssBusy);
// A segment from Xen's packed attribute format in vcpu_hvm_x86_32 (type 3:0, S 4, DPL 6:5,
// P 7, AVL 8, L 9, D/B 10, G 11); a non-present one is marked unusable.
kvm_segment SegmentFromXen(uint32_t base, uint32_t limit, uint16_t ar);

struct X86State {
  kvm_regs regs{};
  kvm_sregs sregs{};
};

// PVH entry: 32-bit flat protected mode, paging off, ebx = hvm_start_info GPA, eip = the
// XEN_ELFNOTE_PHYS32_ENTRY. `base` is the vCPU's reset sregs (descriptor tables, APIC base and
// interrupt bitmap carry over).
X86State PvhBootState(const kvm_sregs& base, uint32_t entry, uint64_t start_info_gpa);

// VCPUOP_initialise: the registers, control registers and segments of a vcpu_hvm_context, on
// top of the vCPU's current sregs `base`. 64-bit mode gets flat segments (Xen's own choice:
// the context has no segments for it).
X86State StateFromHvmContext(const kvm_sregs& base, const vcpu_hvm_context& context);

// The CPUID table for vCPU `vcpu_id`: KVM's supported leaves with their APIC ids set and KVM's
// own paravirt leaves replaced by Xen's (guests look for one hypervisor signature).
std::vector<kvm_cpuid_entry2> BuildCpuid(std::span<const kvm_cpuid_entry2> supported,
                                         uint32_t vcpu_id, uint16_t domid);

// LVT0 = ExtINT, unmasked: what the global callback vector needs on every vCPU (KVM sets it on
// vCPU0 at reset but masks it on the others).
void SetLvt0ExtInt(kvm_lapic_state* lapic);
uint32_t Lvt0(const kvm_lapic_state& lapic);

}  // namespace xenkvm::vmm
