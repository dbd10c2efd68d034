// A KVM virtual machine: memslots, split irqchip (LAPIC in kernel, no PIC/IOAPIC), x2APIC API,
// MSI injection and the MSR filter that sends chosen MSRs to user space.
// Follows the KVM API (Documentation/virt/kvm/api.rst).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>

#include "abi/result.h"
#include "kvm/fd.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"

namespace xenkvm::kvm {

// Threads: setup calls (memslots, caps, filters) from the VMM's main thread before vCPUs run,
// or with vCPUs paused; SignalMsi from any thread (the kernel serialises them).
class Vm {
 public:
  static Result<Vm> Create(const System& system);

  int fd() const { return fd_.get(); }
  const System& system() const { return *system_; }

  Result<> SetMemory(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags = 0);
  // Split irqchip: in-kernel LAPICs, user space owns PIC/IOAPIC (which we don't emulate).
  Result<> EnableSplitIrqchip(uint32_t ioapic_routes = 24);
  // 32-bit x2APIC ids in MSI routing and KVM_SIGNAL_MSI.
  Result<> EnableX2apicApi();
  // MSR accesses denied by the filter exit to user space as KVM_EXIT_X86_RDMSR/WRMSR.
  Result<> EnableUserSpaceMsrExits();
  // Trap reads and writes of [base, base + count) to user space; everything else default-allow.
  Result<> TrapMsrs(uint32_t base, uint32_t count);
  // A fixed-destination MSI through the in-kernel LAPICs. Returns false if the guest blocked
  // it (e.g. a software-disabled LAPIC), which KVM reports as 0.
  Result<bool> SignalMsi(uint64_t address, uint32_t data);
  // The VM's GSI routing table becomes the one MSI route `gsi` -> (address, data)
  // (KVM_SET_GSI_ROUTING; nothing else here uses routing). Any thread; the kernel swaps the
  // table under RCU, so irqfds firing meanwhile use the old or the new route.
  Result<> SetMsiRoute(uint32_t gsi, uint64_t address, uint32_t data);
  // KVM_IRQFD: a write to `eventfd` injects GSI `gsi` in the kernel (no user-space hop).
  Result<> AddIrqfd(int eventfd, uint32_t gsi);
  Result<> RemoveIrqfd(int eventfd, uint32_t gsi);
  Result<Vcpu> CreateVcpu(uint32_t id);

 private:
  Vm(const System& system, Fd fd) : system_(&system), fd_(std::move(fd)) {}
  Result<> EnableCap(uint32_t cap, uint64_t arg0);

  const System* system_;
  Fd fd_;
};

}  // namespace xenkvm::kvm
