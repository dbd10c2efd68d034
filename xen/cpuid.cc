// Xen CPUID leaves; see cpuid.h.
#include "xen/cpuid.h"

#include "abi/platform.h"
#include "abi/xen.h"

namespace xenkvm::xen {

std::optional<CpuidRegs> XenCpuid(uint32_t leaf, uint32_t index, uint32_t xen_vcpu_id,
                                  uint16_t domid) {
  if (leaf < XENKVM_CPUID_BASE || leaf >= XENKVM_CPUID_BASE + kXenCpuidLeaves) return std::nullopt;
  CpuidRegs r;
  switch (leaf - XENKVM_CPUID_BASE) {
    case 0:
      r.eax = XENKVM_CPUID_BASE + kXenCpuidLeaves - 1;  // highest Xen leaf
      r.ebx = XEN_CPUID_SIGNATURE_EBX;
      r.ecx = XEN_CPUID_SIGNATURE_ECX;
      r.edx = XEN_CPUID_SIGNATURE_EDX;
      break;
    case 1:
      r.eax = (kXenVersionMajor << 16) | kXenVersionMinor;
      break;
    case 2:
      r.eax = 1;  // hypercall pages
      r.ebx = XENKVM_HYPERCALL_PAGE_MSR;
      break;
    case 3:
      // TSC leaf: all zero = "TSC mode default, no scaling information"; fine for our guests.
      break;
    case 4:
      if (index == 0) {
        r.eax = XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT |
                XEN_HVM_CPUID_UPCALL_VECTOR;
        r.ebx = xen_vcpu_id;
        r.ecx = domid;
      }
      break;
  }
  return r;
}

}  // namespace xenkvm::xen
