// PirqTable: Xen's HVM PIRQ bookkeeping (physdev.c's physdev_hvm_map_pirq, irq.c's
// map_domain_emuirq_pirq / get_free_pirq) and PIRQs raised before they are bound.
#include "evtchn/pirq_table.h"

namespace xenkvm::evtchn {

int PirqTable::GetFree(int type) {
  // As Xen: a GSI takes the lowest free PIRQ among the non-ISA GSIs; anything else (and a GSI
  // when those are taken) the highest free PIRQ above the GSIs.
  if (type == MAP_PIRQ_TYPE_GSI)
    for (int i = 16; i < kNrGsis; ++i)
      if (IsFree(entries_[i])) return i;
  for (int i = kNrPirqs - 1; i >= kNrGsis; --i)
    if (IsFree(entries_[i])) return i;
  return -XEN_ENOSPC;
}

Result<> PirqTable::CheckDomid(uint16_t domid) const {
  if (domid == DOMID_SELF || domid == domid_) return {};
  // rcu_lock_domain_by_any_id: dom0 exists (the VMM) and XSM refuses a domU acting on it.
  if (domid == 0) return Fail(XEN_EPERM, "physdev: not privileged over dom0");
  return Fail(XEN_ESRCH, "physdev: no such domain");
}

Result<> PirqTable::Map(physdev_map_pirq& op, bool vector_callback) {
  // do_physdev_op normalises the type before anything else.
  if (op.type == MAP_PIRQ_TYPE_MSI_SEG) op.type = MAP_PIRQ_TYPE_MSI;
  TRY(CheckDomid(op.domid));
  // "Only makes sense for vector-based callback" (physdev_map_pirq).
  if (!vector_callback) return Fail(XEN_EINVAL, "map_pirq: no vector callback");
  // physdev_hvm_map_pirq knows GSIs only ("map type not supported yet").
  if (op.type != MAP_PIRQ_TYPE_GSI) return Fail(XEN_EINVAL, "map_pirq: not a GSI");
  if (op.index < 0 || op.index >= kNrGsis) return Fail(XEN_EINVAL, "map_pirq: GSI out of range");
  const int gsi = op.index;
  MutexLock lock(mutex_);
  if (op.pirq < 0) op.pirq = GetFree(op.type);  // -ENOSPC then fails the range check, as in Xen
  // map_domain_emuirq_pirq's checks.
  if (op.pirq < 0 || op.pirq >= kNrPirqs) return Fail(XEN_EINVAL, "map_pirq: pirq out of range");
  Entry& e = entries_[op.pirq];
  const int old = e.emuirq.load();
  if (old != kUnbound && old != gsi) return {};  // Xen warns and leaves the mapping alone
  for (int i = 0; i < kNrPirqs; ++i)             // one PIRQ per GSI
    if (i != op.pirq && entries_[i].emuirq.load() == gsi) return {};
  e.emuirq.store(gsi);
  return {};
}

Result<> PirqTable::Unmap(const physdev_unmap_pirq& op) {
  TRY(CheckDomid(op.domid));
  // Xen answers 0 for a PIRQ that is not mapped (or out of range) when the guest names itself.
  if (op.pirq < 0 || op.pirq >= kNrPirqs) return {};
  // Only the emulated mapping goes (a get_free_pirq allocation stays, as in Xen); a port bound
  // to the PIRQ stays bound.
  MutexLock lock(mutex_);
  entries_[op.pirq].emuirq.store(kUnbound);
  return {};
}

Result<> PirqTable::Eoi(const physdev_eoi& op) {
  if (op.irq >= uint32_t(kNrPirqs)) return Fail(XEN_EINVAL, "eoi: pirq out of range");
  // Xen refuses a PIRQ it has no record of. Our PIRQs are edge (MSI) or edge-emulated GSIs with
  // no level state to re-assert, so an EOI does nothing more.
  if (IsFree(entries_[op.irq])) return Fail(XEN_EINVAL, "eoi: pirq not mapped");
  return {};
}

Result<> PirqTable::IrqStatusQuery(physdev_irq_status_query& op) {
  if (op.irq >= uint32_t(kNrPirqs)) return Fail(XEN_EINVAL, "irq_status_query: out of range");
  // Xen: an HVM PIRQ with neither a machine IRQ nor an emulated one is refused (an allocated
  // but unmapped PIRQ included).
  if (entries_[op.irq].emuirq.load() == kUnbound)
    return Fail(XEN_EINVAL, "irq_status_query: not mapped");
  op.flags = XENIRQSTAT_needs_eoi;  // Xen always asks for the EOI; never shared here
  return {};
}

Result<> PirqTable::GetFreePirq(physdev_get_free_pirq& op) {
  MutexLock lock(mutex_);
  int pirq = GetFree(op.type);
  if (pirq < 0) return Fail(-pirq, "get_free_pirq: none free");
  entries_[pirq].allocated.store(true);  // Xen: arch.irq = PIRQ_ALLOCATED
  op.pirq = uint32_t(pirq);
  return {};
}

Result<> PirqTable::Bind(evtchn_bind_pirq& op) {
  TRY(engine_.BindPirq(op));
  // A raise that found no port left `pending` set; whoever clears it delivers. Both sides
  // change the mark with a read-modify-write, so the later of the two reads the earlier's write:
  // if that is ours, RaiseMsi's mark came first and we deliver; if it is RaiseMsi's, our port
  // (published before this exchange) is visible to its second lookup.
  if (op.pirq < uint32_t(kNrPirqs) && entries_[op.pirq].pending.exchange(false))
    engine_.RaisePirq(op.pirq);
  return {};
}

bool PirqTable::RaiseMsi(uint32_t pirq) {
  if (pirq == 0 || pirq >= uint32_t(kNrPirqs)) return false;  // hvm_inject_msi: PIRQ 0 -ERANGE
  Entry& e = entries_[pirq];
  int emuirq = e.emuirq.load(std::memory_order_acquire);
  if (emuirq == kUnbound) {
    // hvm_inject_msi: the first MSI for an unmapped PIRQ maps it as an emulated MSI. A GSI
    // mapping made meanwhile wins (the exchange fails and the MSI is not for it).
    e.emuirq.compare_exchange_strong(emuirq, kMsiEmu);
    emuirq = e.emuirq.load();
  }
  if (emuirq != kMsiEmu) return false;
  if (engine_.RaisePirq(pirq)) return true;  // bound: the common case, no extra atomics
  // No port: keep it for the bind. A bind that finished between the failed raise and the mark
  // did not see the mark, so raise again after marking; whoever clears the mark delivers, at
  // worst one extra (coalesced) pending-bit set.
  e.pending.exchange(true);  // a read-modify-write: see Bind
  if (!engine_.RaisePirq(pirq)) return false;
  e.pending.exchange(false);
  return true;
}

bool PirqTable::KeptPending(uint32_t pirq) const {
  return pirq < uint32_t(kNrPirqs) && entries_[pirq].pending.load();
}

}  // namespace xenkvm::evtchn
