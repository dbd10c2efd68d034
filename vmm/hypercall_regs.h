// Hypercall register convention (Xen's hypercall page ABI, xen/include/public/arch-x86/xen-*.h):
// a 64-bit caller passes arguments in rdi, rsi, rdx, r10, r8 and gets rax back; a 32-bit
// (compat) caller uses ebx, ecx, edx, esi, edi and gets eax. The mode is long mode with a
// 64-bit code segment (EFER.LMA and CS.L); the caller's privilege is SS.DPL. Pure functions
// over the registers KVM publishes at the exit (sync regs), so the trap scheme can change
// without touching the decoding.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "abi/platform.h"
#include "kvm/pio_exit_probe.h"
#include "xen/domain.h"

namespace xenkvm::vmm {

inline constexpr uint64_t kEferLma = 1ull << 10;

// Whether the vCPU runs 32-bit code (legacy protected mode or compatibility mode).
inline bool IsCompatMode(const kvm_sregs& sregs) {
  return !((sregs.efer & kEferLma) && sregs.cs.l);
}

inline xen::HypercallCall DecodeHypercall(uint32_t vcpu, uint32_t nr, const kvm_regs& regs,
                                          const kvm_sregs& sregs) {
  xen::HypercallCall call;
  call.vcpu = vcpu;
  call.nr = nr;
  call.compat = IsCompatMode(sregs);
  call.cpl = static_cast<uint8_t>(sregs.ss.dpl);  // SS.DPL is the CPL
  if (call.compat) {
    constexpr uint64_t k32 = 0xffffffffu;
    call.args = {regs.rbx & k32, regs.rcx & k32, regs.rdx & k32, regs.rsi & k32, regs.rdi & k32};
  } else {
    call.args = {regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8};
  }
  return call;
}

// Where the trapping `out %eax,$XENKVM_HYPERCALL_PORT` starts, from the rip KVM reported at its
// exit: hardware KVM reports the `out` itself, PVM the instruction after it.
inline uint64_t HypercallTrapRip(uint64_t exit_rip, kvm::PioExitRip kind) {
  return exit_rip - kvm::PioExitRipOffset(kind, XENKVM_HYPERCALL_TRAP_LENGTH);
}

// KVM_EXIT_XEN of type KVM_EXIT_XEN_HCALL (the host's KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL,
// kvm/vm.h): KVM decoded the vmcall/vmmcall itself (arch/x86/kvm/xen.c), with the same convention:
// longmode is a 64-bit code segment in long mode, input is all of rax, params are rdi rsi rdx r10
// r8 r9 (compat: ebx ecx edx esi edi ebp, already 32 bits), cpl the caller's. A compat caller's
// number is eax, as Xen reads it; a 64-bit one's is all of rax (a number above 32 bits is
// unknown, -ENOSYS, as in Xen).
inline xen::HypercallCall DecodeXenHypercallExit(uint32_t vcpu, const kvm_xen_exit& exit) {
  constexpr uint64_t k32 = 0xffffffffu;
  xen::HypercallCall call;
  call.vcpu = vcpu;
  call.compat = exit.u.hcall.longmode == 0;
  call.nr = call.compat ? exit.u.hcall.input & k32 : exit.u.hcall.input;
  call.cpl = static_cast<uint8_t>(exit.u.hcall.cpl & 3);
  for (size_t i = 0; i < call.args.size(); ++i)
    call.args[i] = call.compat ? exit.u.hcall.params[i] & k32 : exit.u.hcall.params[i];
  return call;
}

// Where the stub's `ret` finds the return address: 8 bytes at rsp for a 64-bit caller, 4 at
// ss.base + esp (a 32-bit linear address) for a 32-bit one (flat 32-bit stacks: SS.B = 1).
struct ReturnSlot {
  uint64_t gva = 0;
  uint32_t size = 8;
};
inline ReturnSlot StubReturnSlot(const kvm_regs& regs, const kvm_sregs& sregs) {
  if (IsCompatMode(sregs)) return {(sregs.ss.base + (regs.rsp & 0xffffffffu)) & 0xffffffffu, 4};
  return {regs.rsp, 8};
}

// Completes the `ret` with the return address read from StubReturnSlot: rip to it, the stack
// pointer past it (esp wraps within 32 bits for a 32-bit caller).
inline void CompleteStubReturn(kvm_regs& regs, const kvm_sregs& sregs, uint64_t return_address) {
  if (IsCompatMode(sregs)) {
    regs.rip = return_address & 0xffffffffu;
    regs.rsp = (regs.rsp & ~uint64_t{0xffffffffu}) | ((regs.rsp + 4) & 0xffffffffu);
  } else {
    regs.rip = return_address;
    regs.rsp += 8;
  }
}

// The rax a caller sees: the full 64-bit result, or its low 32 bits (zero-extended, as a
// 32-bit register write does) for a compat caller.
inline uint64_t EncodeHypercallResult(bool compat, long result) {
  return compat ? static_cast<uint32_t>(result) : static_cast<uint64_t>(result);
}

// Completes a KVM_EXIT_XEN hypercall: KVM moves the result into rax at the next KVM_RUN and
// skips the vmcall, but only while rip is still the vmcall's (kvm_xen_hypercall_complete_
// userspace): so rip and rax are left to KVM, nothing else is written.
inline void CompleteXenHypercallExit(kvm_xen_exit& exit, bool compat, long result) {
  exit.u.hcall.result = EncodeHypercallResult(compat, result);
}

}  // namespace xenkvm::vmm
