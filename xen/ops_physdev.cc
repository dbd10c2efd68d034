// physdev_op for an HVM guest (xen/physdev.h; Xen's hvm_physdev_op and do_physdev_op in
// xen/arch/x86/hvm/hypercall.c and physdev.c): the PIRQ operations a guest uses to route
// device interrupts to event channels. The PIRQ bookkeeping is evtchn::PirqTable; here the
// arguments are copied in and out as Xen copies them (map_pirq's struct goes back even on error).
#include "xen/domain.h"

namespace xenkvm::xen {

// Xen's is_hvm_pv_evtchn_domain: the domain takes events through a vector (the global callback
// vector, or vCPU0's own upcall vector).
bool Domain::VectorCallbackLocked() const {
  return (params_[HVM_PARAM_CALLBACK_IRQ] >> 56) == HVM_PARAM_CALLBACK_TYPE_VECTOR ||
         vcpu0_upcall_vector_;
}

Domain::Ret Domain::PhysdevOp(const HypercallCall& c) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  const uint64_t arg = c.args[1];
  switch (c.args[0]) {
    case PHYSDEVOP_map_pirq: {
      auto op = TRY(guest.Read<physdev_map_pirq_t>(arg));
      if (op.type == MAP_PIRQ_TYPE_MULTI_MSI && op.table_base != 0)
        return Fail(XEN_EINVAL, "map_pirq: multi-MSI table_base");
      bool vector_callback;
      {
        MutexLock lock(mutex_);
        vector_callback = VectorCallbackLocked();
      }
      Result<> mapped = pirqs_.Map(op, vector_callback);
      TRY(guest.Write(arg, op));  // whatever the result, as Xen's __copy_to_guest
      TRY(mapped);
      return 0;
    }
    case PHYSDEVOP_unmap_pirq: {
      auto op = TRY(guest.Read<physdev_unmap_pirq_t>(arg));
      TRY(pirqs_.Unmap(op));
      return 0;
    }
    case PHYSDEVOP_eoi: {
      auto op = TRY(guest.Read<physdev_eoi_t>(arg));
      TRY(pirqs_.Eoi(op));
      return 0;
    }
    case PHYSDEVOP_irq_status_query: {
      auto op = TRY(guest.Read<physdev_irq_status_query_t>(arg));
      TRY(pirqs_.IrqStatusQuery(op));
      TRY(guest.Write(arg, op));
      return 0;
    }
    case PHYSDEVOP_get_free_pirq: {
      auto op = TRY(guest.Read<physdev_get_free_pirq_t>(arg));
      TRY(pirqs_.GetFreePirq(op));
      TRY(guest.Write(arg, op));
      return 0;
    }
    default:
      // Everything else is for the hardware domain (or PV guests): -ENOSYS to an HVM domU.
      LogUnknown(c.nr, c.args[0]);
      return Fail(XEN_ENOSYS, "physdev_op cmd");
  }
}

}  // namespace xenkvm::xen
