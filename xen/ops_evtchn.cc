// event_channel_op (xen/event_channel.h): copy the argument struct in, run the engine's
// operation, copy it back out on success (as Xen does), map errors to Xen errnos.
#include "xen/domain.h"

namespace xenkvm::xen {

namespace {
// In-out op: read T, run op, write T back only on success.
template <class T, class Op>
Result<long> InOut(const HypercallArgs& guest, uint64_t arg, Op&& op) {
  T value = TRY(guest.Read<T>(arg));
  TRY(op(value));
  TRY(guest.Write(arg, value));
  return 0;
}
template <class T, class Op>
Result<long> In(const HypercallArgs& guest, uint64_t arg, Op&& op) {
  T value = TRY(guest.Read<T>(arg));
  TRY(op(value));
  return 0;
}
}  // namespace

Domain::Ret Domain::EventChannelOp(const HypercallCall& c, uint64_t cmd, uint64_t arg) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  evtchn::Engine& e = engine_;
  switch (cmd) {
    case EVTCHNOP_alloc_unbound:
      return InOut<evtchn_alloc_unbound_t>(guest, arg,
                                           [&](auto& op) { return e.AllocUnbound(op); });
    case EVTCHNOP_bind_interdomain:
      return InOut<evtchn_bind_interdomain_t>(guest, arg,
                                              [&](auto& op) { return e.BindInterdomain(op); });
    case EVTCHNOP_bind_virq:
      return InOut<evtchn_bind_virq_t>(guest, arg, [&](auto& op) { return e.BindVirq(op); });
    case EVTCHNOP_bind_ipi:
      return InOut<evtchn_bind_ipi_t>(guest, arg, [&](auto& op) { return e.BindIpi(op); });
    case EVTCHNOP_bind_pirq:
      // Through the PIRQ table: a PIRQ a device raised before the bind is delivered now.
      return InOut<evtchn_bind_pirq_t>(guest, arg, [&](auto& op) { return pirqs_.Bind(op); });
    case EVTCHNOP_status:
      return InOut<evtchn_status_t>(guest, arg, [&](auto& op) { return e.Status(op); });
    case EVTCHNOP_close:
      return In<evtchn_close_t>(guest, arg, [&](auto& op) { return e.Close(op); });
    case EVTCHNOP_send:
      return In<evtchn_send_t>(guest, arg, [&](auto& op) { return e.Send(op); });
    case EVTCHNOP_bind_vcpu:
      return In<evtchn_bind_vcpu_t>(guest, arg, [&](auto& op) { return e.BindVcpu(op); });
    case EVTCHNOP_unmask:
      return In<evtchn_unmask_t>(guest, arg, [&](auto& op) { return e.Unmask(op); });
    case EVTCHNOP_reset:
      return In<evtchn_reset_t>(guest, arg, [&](auto& op) { return e.Reset(op); });
    // FIFO (xen/common/event_fifo.c). The three structs have one layout for 64-bit and
    // compat guests (uint64_t first, then 32- and 8-bit fields; 24, 8 and 8 bytes), so no compat
    // decoding is needed. init_control's link_bits is copied back only on success, as in Xen.
    case EVTCHNOP_init_control:
      return InOut<evtchn_init_control_t>(guest, arg, [&](auto& op) { return e.InitControl(op); });
    case EVTCHNOP_expand_array:
      return In<evtchn_expand_array_t>(guest, arg, [&](auto& op) { return e.ExpandArray(op); });
    case EVTCHNOP_set_priority:
      return In<evtchn_set_priority_t>(guest, arg, [&](auto& op) { return e.SetPriority(op); });
    default:
      LogUnknown(c.nr, cmd);
      return Fail(XEN_ENOSYS, "event_channel_op cmd");
  }
}

}  // namespace xenkvm::xen
