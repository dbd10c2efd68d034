// What a vCPU thread needs from the machine around it, and nothing more: the hypercall layer,
// the few devices that exit to user space (debugcon, stage marker, hypercall-page MSR), its
// boot state and CPUID, the clock, and the one way to end the run. Machine implements it;
// tests can fake it.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "abi/result.h"
#include "vmm/machine_end.h"
#include "xen/domain.h"

namespace xenkvm::vmm {

struct BootEntry {
  uint32_t entry = 0;           // XEN_ELFNOTE_PHYS32_ENTRY
  uint64_t start_info_gpa = 0;  // hvm_start_info, passed in ebx
};

class VcpuHost {
 public:
  virtual ~VcpuHost() = default;

  // ---- any thread ----
  virtual bool Stopping() const = 0;
  // End the run (the first end wins) and make every vCPU leave KVM_RUN.
  virtual void Stop(MachineEnd end) = 0;
  virtual uint64_t SystemTimeNs() const = 0;

  // ---- the calling vCPU's own thread ----
  virtual long Hypercall(const xen::HypercallCall& call) = 0;
  // The hypercall-page MSR write; `compat`: the caller runs in 32-bit mode (latches the
  // shared_info layout as Xen does).
  virtual Result<> WriteHypercallPage(uint64_t msr_value, bool compat) = 0;
  // The stub slot (hypercall number) starting at `gpa` in a hypercall page, or -1: not a slot.
  virtual int HypercallSlot(uint64_t gpa) const = 0;
  virtual Result<uint64_t> TranslateGva(uint32_t calling_vcpu, uint64_t gva,
                                        xen::Access access) = 0;
  virtual Result<> ReadGuest(uint64_t gpa, std::span<std::byte> out) const = 0;
  // RUNSTATE_* transitions of this vCPU (VCPUOP_register_runstate_memory_area).
  virtual void NoteRunstate(uint32_t vcpu, int runstate) = 0;
  virtual void SyncEvents(uint32_t vcpu) = 0;  // Engine::SyncVcpu
  virtual void NoteStage(uint32_t vcpu, uint32_t stage) = 0;
  virtual void DebugconWrite(uint8_t byte) = 0;
  // An MMIO exit (no RAM at gpa): true if a device took it, a read's bytes filled in.
  virtual bool Mmio(uint64_t /*gpa*/, std::span<uint8_t> /*data*/, bool /*is_write*/) {
    return false;
  }
  virtual Result<std::vector<kvm_cpuid_entry2>> Cpuid(uint32_t vcpu) = 0;
  virtual BootEntry Boot() const = 0;
  // Pair the boot vCPU's TSC with the host clock (pvclock calibration).
  virtual void CalibrateClock(uint32_t vcpu, uint64_t guest_tsc, uint32_t tsc_khz) = 0;
  // The host clock the guest TSC is anchored to.
  virtual uint64_t ClockMonotonicNs() const = 0;
  // A reading of `vcpu`'s TSC while it is out of KVM_RUN, taken at ClockMonotonicNs() ==
  // `mono_ns`, for the guest clock (GuestClock::Sample); the vcpu_time_info it moved are
  // rewritten.
  virtual void SampleClock(uint32_t vcpu, uint64_t guest_tsc, uint64_t mono_ns) = 0;
  // The thread is gone (Machine::Run waits for all of them).
  virtual void VcpuThreadFinished(uint32_t vcpu) = 0;
};

}  // namespace xenkvm::vmm
