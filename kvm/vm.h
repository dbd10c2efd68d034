// A KVM virtual machine: memslots, split irqchip (LAPIC in kernel, no PIC/IOAPIC), x2APIC API,
// MSI injection and the MSR filter that sends chosen MSRs to user space.
// Follows the KVM API (Documentation/virt/kvm/api.rst).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <memory>

#include "abi/result.h"
#include "abi/sync.h"
#include "kvm/fd.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"

namespace xenkvm::kvm {

// Threads: setup calls (memslots, caps, filters) from the VMM's main thread before vCPUs run,
// or with vCPUs paused; SignalMsi, SetMsiRoute and the irqfd calls from any thread (the kernel
// serialises them; the routing table has its own lock).
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
  // KVM_XEN_HVM_CONFIG with only KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL (arch/x86/kvm/xen.c): every
  // vmcall/vmmcall leaves KVM_RUN as KVM_EXIT_XEN (type KVM_EXIT_XEN_HCALL), except that at
  // CPL0 KVM answers SCHEDOP_yield, and SCHEDOP_poll as a yield, itself (result 0: without
  // EVTCHN_SEND it cannot poll). msr = 0: KVM claims no hypercall-page MSR, so the MSR filter
  // (TrapMsrs) keeps that MSR in user space; no blob, as INTERCEPT_HCALL requires. ENOTSUP when
  // the host lacks the flag (System::XenHvmFlags).
  Result<> InterceptXenHypercalls();
  // A fixed-destination MSI through the in-kernel LAPICs. Returns false if the guest blocked
  // it (e.g. a software-disabled LAPIC), which KVM reports as 0.
  Result<bool> SignalMsi(uint64_t address, uint32_t data);
  // One fixed-MSI route in the VM's GSI routing table, `gsi` -> (address, data), added or
  // replaced. KVM_SET_GSI_ROUTING replaces the whole table, so the VM keeps it and users of
  // different GSIs (upcall irqfds, the test device) cannot undo each other's routes. With an
  // irqfd on a GSI, signalling its eventfd sends that MSI in the kernel.
  Result<> SetMsiRoute(uint32_t gsi, uint64_t address, uint32_t data);
  // KVM_IRQFD: a write to `eventfd` raises `gsi` by its route; the VM keeps its own reference.
  Result<> AddIrqfd(int eventfd, uint32_t gsi);
  Result<> RemoveIrqfd(int eventfd, uint32_t gsi);
  Result<Vcpu> CreateVcpu(uint32_t id);

 private:
  // The GSI routing table as KVM has it (KVM_SET_GSI_ROUTING takes the whole of it).
  struct GsiRoutes {
    Mutex mutex;  // guards entries and each KVM_SET_GSI_ROUTING made from them
    std::map<uint32_t, kvm_irq_routing_entry> entries XENKVM_GUARDED_BY(mutex);
  };

  Vm(const System& system, Fd fd)
      : system_(&system), fd_(std::move(fd)), gsi_routes_(std::make_unique<GsiRoutes>()) {}
  Result<> EnableCap(uint32_t cap, uint64_t arg0);

  const System* system_;
  Fd fd_;
  std::unique_ptr<GsiRoutes> gsi_routes_;  // behind a pointer: Vm moves, its mutex doesn't
};

}  // namespace xenkvm::kvm
