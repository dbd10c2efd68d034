// Linux's Xen hypercall instructions, found in a loaded kernel image and rewritten to our
// port-I/O trap. Since the XSA-466 fixes (6.1.121, 6.6.67, 6.12.6, mainline 6.13) an HVM/PVH
// Linux has no hypercall page: arch/x86/xen/xen-head.S has xen_hypercall_amd (`vmmcall`) and
// xen_hypercall_intel (`vmcall`), chosen by CPU vendor. On a KVM without Xen support those
// instructions return -KVM_ENOSYS; rewritten to `out %eax,$XENKVM_HYPERCALL_PORT; nop` (same
// length) they trap to the VMM, number in eax (docs/hypercall_sites.md).
//
// Pure functions over bytes: no I/O, bounded work (one pass, constant work per candidate).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "abi/platform.h"

namespace xenkvm::boot {

// The replacement for a 3-byte vmcall/vmmcall: `out %eax,$0xe0` (e7 e0) then `nop` (90).
inline constexpr uint8_t kPortTrap[3] = {0xe7, XENKVM_HYPERCALL_PORT, 0x90};

struct HypercallSite {
  size_t offset = 0;     // of the 3-byte instruction, within the scanned bytes
  bool vmmcall = false;  // xen_hypercall_amd's vmmcall (else xen_hypercall_intel's vmcall)
};

// The sites in `code`, one executable region of a loaded image whose first byte is at address
// `base` (physical or virtual: only its low bits matter, for the 16-byte alignment of
// functions). Only Linux's pair is returned, recognised by its whole shape:
//   - xen_hypercall_amd then xen_hypercall_intel, each starting 16-byte aligned, each body
//     [endbr64] vmmcall|vmcall RET, where RET is `jmp rel32` (the return thunk), `ret; int3`
//     or `ret`; both bodies of one form, and both jumps to the same target;
//   - between the two bodies only padding (nop forms, int3), the second at most 64 bytes on;
//   - right before the first body (only padding between), xen_hypercall_hvm's tail
//     `jz xen_hypercall_amd; jmp xen_hypercall_intel` (rel8 or rel32 forms).
// Any other vmcall/vmmcall (KVM's own kvm_hypercall*, VMware's backdoor, alternatives) is left
// alone, as is a pair that misses any one of these.
std::vector<HypercallSite> FindXenHypercallSites(std::span<const uint8_t> code, uint64_t base);

// Rewrites every site FindXenHypercallSites finds to kPortTrap; returns how many.
size_t RewriteXenHypercallSites(std::span<uint8_t> code, uint64_t base);

}  // namespace xenkvm::boot
