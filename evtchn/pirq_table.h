// A guest's PIRQ space as Xen keeps it for an HVM domain with PIRQs (X86_EMU_USE_PIRQ;
// xen/arch/x86/physdev.c, irq.c, hvm/irq.c): PHYSDEVOP_map_pirq / unmap_pirq / eoi /
// irq_status_query / get_free_pirq with Xen's answers, and raising a PIRQ from a device (an MSI
// with vector 0, msi.h, Xen's hvm_inject_msi). A PIRQ raised while no port is bound to it is
// kept and delivered when the guest binds one (EVTCHNOP_bind_pirq through Bind() here); Xen
// drops such a raise (send_guest_pirq finds no port), libxenkvm keeps it so that a device may
// fire before the guest's bind without losing its first interrupt.
//
// Threads: any. Locks: mutex_ guards the mapping table; it is taken before the engine's table
// lock and never on the raise path, which uses only per-PIRQ atomics and the engine's
// non-blocking RaisePirq.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "evtchn/engine.h"

namespace xenkvm::evtchn {

class PirqTable {
 public:
  static constexpr int kNrPirqs = 1024;  // the engine's PIRQ limit (Xen: d->nr_pirqs)
  static constexpr int kNrGsis = 48;     // GSIs of the emulated IO-APIC (Xen: nr_irqs_gsi)

  // `domid`: the guest's own domain id (DOMID_SELF and it name the guest).
  PirqTable(Engine& engine, uint16_t domid) : engine_(engine), domid_(domid) {}

  // PHYSDEVOP_map_pirq by the guest for itself. As Xen's physdev_hvm_map_pirq: only with a
  // vector callback (`vector_callback`: HVM_PARAM_CALLBACK_IRQ type vector, or vCPU0 has an
  // upcall vector; else -EINVAL), only GSIs (index < 48; the PIRQ is chosen when pirq < 0), an
  // MSI type is -EINVAL (a guest gets an MSI PIRQ with get_free_pirq and raises it with an MSI
  // whose vector is 0). Another existing domain (dom0) -EPERM, an unknown one -ESRCH. Xen copies
  // the struct back whatever the result: op is updated (pirq, type MSI_SEG -> MSI) either way.
  Result<> Map(physdev_map_pirq& op, bool vector_callback);
  Result<> Unmap(const physdev_unmap_pirq& op);
  Result<> Eoi(const physdev_eoi& op);
  Result<> IrqStatusQuery(physdev_irq_status_query& op);
  Result<> GetFreePirq(physdev_get_free_pirq& op);

  // EVTCHNOP_bind_pirq: binds through the engine, then delivers a PIRQ raised before the bind.
  Result<> Bind(evtchn_bind_pirq& op);

  // From a device (any thread, never blocks). An MSI PIRQ not mapped yet is mapped as Xen's
  // hvm_inject_msi does; a GSI-mapped PIRQ is not raised by an MSI. Returns whether the PIRQ
  // reached a bound port now (false: kept pending, or refused).
  bool RaiseMsi(uint32_t pirq);

  // Whether a raise is being kept for a PIRQ with no port (tests).
  bool KeptPending(uint32_t pirq) const;

 private:
  // Xen's emuirq values for a PIRQ (asm/irq.h): unbound, or IRQ_MSI_EMU, or the GSI number.
  static constexpr int kUnbound = -1;
  static constexpr int kMsiEmu = -3;
  struct Entry {
    std::atomic<int> emuirq{kUnbound};
    std::atomic<bool> allocated{false};  // PHYSDEVOP_get_free_pirq handed it out
    std::atomic<bool> pending{false};    // raised while no port was bound
  };
  bool IsFree(const Entry& e) const { return !e.allocated.load() && e.emuirq.load() == kUnbound; }
  int GetFree(int type) XENKVM_REQUIRES(mutex_);

  // The domain a PHYSDEVOP names: 0 the guest itself; else Xen's -EPERM or -ESRCH.
  Result<> CheckDomid(uint16_t domid) const;

  Engine& engine_;
  const uint16_t domid_;
  Mutex mutex_;  // serialises map/unmap/allocate (the atomics below are read without it)
  std::array<Entry, kNrPirqs> entries_;
};

}  // namespace xenkvm::evtchn
