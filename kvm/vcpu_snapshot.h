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
  // KVM_GET_XSAVE's legacy 4 KiB area (struct kvm_xsave, whose flexible tail stays empty):
  // every feature this VMM's guests may enable.
  std::array<uint32_t, sizeof(kvm_xsave) / 4> xsave{};
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
