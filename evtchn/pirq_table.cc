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

Result<> PirqTable::Map(physdev_map_pirq& op) {
  // Only a guest mapping for itself reaches the HVM path; naming a domain (even its own id)
  // needs privilege over it.
  if (op.domid != DOMID_SELF) return Fail(XEN_EPERM, "map_pirq: not DOMID_SELF");
  int emuirq;
  switch (op.type) {
    case MAP_PIRQ_TYPE_GSI:
      emuirq = op.index;
      break;
    case MAP_PIRQ_TYPE_MSI:
    case MAP_PIRQ_TYPE_MSI_SEG:
      if (op.index != -1) return Fail(XEN_EINVAL, "map_pirq: MSI index must be -1");
      emuirq = kMsiEmu;
      break;
    default:
      return Fail(XEN_EINVAL, "map_pirq: type");
  }
  MutexLock lock(mutex_);
  if (op.pirq < 0) op.pirq = GetFree(op.type);  // -ENOSPC then fails the range check, as in Xen
  // map_domain_emuirq_pirq's checks.
  if (op.pirq < 0 || op.pirq >= kNrPirqs || emuirq == kUnbound || emuirq >= kNrGsis)
    return Fail(XEN_EINVAL, "map_pirq: pirq or index out of range");
  Entry& e = entries_[op.pirq];
  const int old = e.emuirq.load();
  if (old != kUnbound && old != emuirq) return {};  // Xen warns and leaves the mapping alone
  if (emuirq >= 0)                                  // one PIRQ per GSI
    for (int i = 0; i < kNrPirqs; ++i)
      if (i != op.pirq && entries_[i].emuirq.load() == emuirq) return {};
  e.emuirq.store(emuirq);
  return {};
}

Result<> PirqTable::Unmap(const physdev_unmap_pirq& op) {
  if (op.domid != DOMID_SELF) return Fail(XEN_EPERM, "unmap_pirq: not DOMID_SELF");
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
  // A raise that found no port left `pending` set; whoever clears it delivers.
  if (op.pirq < uint32_t(kNrPirqs) && entries_[op.pirq].pending.exchange(false))
    engine_.RaisePirq(op.pirq);
  return {};
}

bool PirqTable::RaiseMsi(uint32_t pirq) {
  if (pirq >= uint32_t(kNrPirqs)) return false;
  Entry& e = entries_[pirq];
  int emuirq = e.emuirq.load(std::memory_order_acquire);
  if (emuirq == kUnbound) {
    // hvm_inject_msi: the first MSI for an unmapped PIRQ maps it as an emulated MSI. A GSI
    // mapping made meanwhile wins (the exchange fails and the MSI is not for it).
    e.emuirq.compare_exchange_strong(emuirq, kMsiEmu);
    emuirq = e.emuirq.load();
  }
  if (emuirq != kMsiEmu) return false;
  // Mark first, then try: a bind that runs between the two finds the mark and delivers; a raise
  // that reached a port takes its own mark back. At worst one extra pending-bit set.
  e.pending.store(true);
  if (!engine_.RaisePirq(pirq)) return false;
  e.pending.exchange(false);
  return true;
}

bool PirqTable::KeptPending(uint32_t pirq) const {
  return pirq < uint32_t(kNrPirqs) && entries_[pirq].pending.load();
}

}  // namespace xenkvm::evtchn
