// The Xen CPUID leaves at XENKVM_CPUID_BASE (xen/arch-x86/cpuid.h): signature "XenVMMXenVMM",
// version, hypercall-page MSR, TSC leaf, HVM features (vCPU id, per-vCPU upcall vector).
#pragma once

#include <cstdint>
#include <optional>

namespace xenkvm::xen {

struct CpuidRegs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

inline constexpr uint32_t kXenVersionMajor = 4;
inline constexpr uint32_t kXenVersionMinor = 17;
inline constexpr uint32_t kXenCpuidLeaves = 5;  // base .. base+4

// The value of leaf `leaf` (subleaf `index`) for vCPU `xen_vcpu_id`, or nullopt if `leaf` is
// not one of ours.
std::optional<CpuidRegs> XenCpuid(uint32_t leaf, uint32_t index, uint32_t xen_vcpu_id,
                                  uint16_t domid);

}  // namespace xenkvm::xen
