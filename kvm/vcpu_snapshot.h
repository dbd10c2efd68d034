// A vCPU's whole architectural state as KVM exposes it, for snapshots (api.rst: KVM_GET_REGS,
// SREGS, XSAVE, XCRS, MSRS, LAPIC, VCPU_EVENTS, MP_STATE, DEBUGREGS and their SET_ twins),
// taken and put back on the vCPU's own thread, in the order QEMU's kvm_arch_put_registers uses.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <vector>

#include "abi/result.h"
#include "kvm/vcpu.h"
#include "snapshot/codec.h"

namespace xenkvm::kvm {

struct VcpuSnapshot {
  kvm_regs regs{};
  kvm_sregs sregs{};
  // The XSAVE area as KVM_GET_XSAVE2 gives it (struct kvm_xsave and its tail: as large as
  // the host's features need, at least the legacy 4 KiB of KVM_GET_XSAVE).
  // Empty where this KVM gives no XSAVE area (seen: EINVAL from both ioctls in a nested VM);
  // then fpu (x87/SSE, KVM_GET_FPU) and no XCRs carry the FPU state.
  std::vector<uint32_t> xsave;
  kvm_fpu fpu{};
  bool has_xcrs = false;
  kvm_xcrs xcrs{};
  kvm_lapic_state lapic{};
  kvm_vcpu_events events{};  // pending exceptions, interrupts, NMIs, SMIs
  kvm_mp_state mp_state{};
  kvm_debugregs debugregs{};
  std::vector<kvm_msr_entry> msrs;  // those of kSavedMsrs this host has, TSC first

  void Encode(snapshot::Encoder& out) const;
  // Hostile input: only kSavedMsrs indexes, each once; KVM checks the register values.
  static Result<VcpuSnapshot> Decode(snapshot::Decoder& in);
};

// Own thread, vCPU out of KVM_RUN.
Result<VcpuSnapshot> SaveVcpu(Vcpu& vcpu);
Result<> RestoreVcpu(Vcpu& vcpu, const VcpuSnapshot& state);

}  // namespace xenkvm::kvm
