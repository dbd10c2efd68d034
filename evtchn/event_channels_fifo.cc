// The FIFO ops of xen/common/event_fifo.c on a domain's event channels: EVTCHNOP_init_control
// (switching a 2-level guest to FIFO with its pending events), EVTCHNOP_expand_array,
// EVTCHNOP_set_priority, and the way back to 2-level on EVTCHNOP_reset. Errors and their order are
// Xen's.
#include "evtchn/event_channels.h"

namespace xenkvm::evtchn {

namespace {
constexpr uint32_t kControlBlockSize = sizeof(evtchn_fifo_control_block_t);
}  // namespace

// A guest frame Xen would map for FIFO (get_page_from_gfn): any other is -EINVAL.
Result<uint64_t> EventChannels::FifoPageLocked(uint64_t gfn) {
  if (gfn > (UINT64_MAX >> 12)) return Fail(XEN_EINVAL, "gfn out of range");
  const uint64_t gpa = gfn << 12;
  auto guard = mem::LayoutGuard::Acquire(memory_);
  if (!memory_.TranslateGuarded(gpa, abi::kPageSize)) return Fail(XEN_EINVAL, "gfn not RAM");
  return gpa;
}

// The first control block: from here on senders park events (no event array page yet); then,
// once 2-level senders in flight have drained, every port pending in 2-level is parked too, and
// is raised on FIFO when expand_array adds its page (Xen's setup_ports).
void EventChannels::EnterFifoLocked() {
  const uint32_t prev_ports = ports_.max_ports();
  delivery_.fifo_state().SetEnabled(true);
  SetModeLocked(Delivery::Mode::kFifo);
  memory_.WaitForReaders();
  auto guard = mem::LayoutGuard::Acquire(memory_);
  uint8_t* shared_info = delivery_.MapSharedInfo();
  PortOps& old = delivery_.TwoLevelOf(abi_ == Abi::kCompat);
  for (Port port = 1; port < prev_ports; ++port) {
    PortEntry* entry = ports_.Find(port);
    if (!entry) continue;
    entry->priority.store(EVTCHN_FIFO_PRIORITY_DEFAULT, std::memory_order_relaxed);
    const Binding binding = PortTable::BindingOf(*entry);
    if (shared_info && IsDeliverable(binding.state) && old.IsPending(port, shared_info))
      delivery_.DeliverLocked(port, *entry, binding, nullptr, /*count=*/false);  // parks it
  }
}

void EventChannels::LeaveFifoLocked() {
  SetModeLocked(TwoLevelModeLocked());
  memory_.WaitForReaders();  // no sender still inside the FIFO path
  delivery_.fifo_state().Clear();
  ports_.ForEachEntryLocked([](PortEntry& entry) {
    entry.priority.store(EVTCHN_FIFO_PRIORITY_DEFAULT, std::memory_order_relaxed);
    entry.fifo_last_queue.store(0, std::memory_order_relaxed);
  });
}

Result<> EventChannels::InitControl(evtchn_init_control& op) {
  op.link_bits = EVTCHN_FIFO_LINK_BITS;
  if (!ports_.FindVcpu(op.vcpu)) return Fail(XEN_ENOENT, "init_control: no such vCPU");
  if (op.offset > abi::kPageSize - kControlBlockSize)
    return Fail(XEN_EINVAL, "init_control: control block crosses a page");
  if (op.offset % 8 != 0) return Fail(XEN_EINVAL, "init_control: offset not 8-byte aligned");
  MutexLock lock(ports_.mutex);
  if (delivery_.fifo_state().HasControlBlock(op.vcpu))
    return Fail(XEN_EINVAL, "init_control: vCPU already has a control block");
  // A bad frame leaves no FIFO state behind (xsa-188): expand_array stays -EOPNOTSUPP.
  const uint64_t gpa = TRY(FifoPageLocked(op.control_gfn));
  delivery_.fifo_state().SetControlBlock(op.vcpu, gpa + op.offset);
  if (!delivery_.fifo()) EnterFifoLocked();
  return {};
}

Result<> EventChannels::ExpandArray(const evtchn_expand_array& op) {
  MutexLock lock(ports_.mutex);
  if (!delivery_.fifo()) return Fail(XEN_EOPNOTSUPP, "expand_array before init_control");
  const Port first = delivery_.fifo_state().ports_with_words();
  if (first / kFifoWordsPerPage >= kFifoMaxArrayPages)
    return Fail(XEN_ENOSPC, "FIFO event array is full");
  const uint64_t gpa = TRY(FifoPageLocked(op.array_gfn));
  TRY(delivery_.fifo_state().AddArrayPage(gpa));
  // Events raised while this page was missing (Xen's add_page_to_event_array).
  const std::vector<Port> parked =
      delivery_.fifo_state().TakeParked(first, first + kFifoWordsPerPage);
  if (parked.empty()) return {};
  auto guard = mem::LayoutGuard::Acquire(memory_);
  for (Port port : parked) {
    PortEntry* entry = ports_.Find(port);
    if (!entry) continue;
    const Binding binding = PortTable::BindingOf(*entry);
    if (IsDeliverable(binding.state))
      delivery_.DeliverLocked(port, *entry, binding, nullptr, /*count=*/false);
  }
  return {};
}

Result<> EventChannels::SetPriority(const evtchn_set_priority& op) {
  PortEntry* entry = ports_.Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "set_priority: bad port");
  if (!delivery_.fifo()) return Fail(XEN_ENOSYS, "2-level event channels have no priorities");
  const PortState state = PortTable::BindingOf(*entry).state;
  if (state == PortState::kFree || state == PortState::kReserved)
    return Fail(XEN_EACCES, "set_priority: port not in use");
  if (op.priority > EVTCHN_FIFO_PRIORITY_MIN) return Fail(XEN_EINVAL, "set_priority: priority");
  // Later events use the new queue; one already linked stays where it is (as in Xen).
  entry->priority.store(uint8_t(op.priority), std::memory_order_relaxed);
  return {};
}

FifoSnapshot EventChannels::SaveFifo() const {
  MutexLock lock(ports_.mutex);
  std::vector<PortEntry*> entries(ports_.max_ports());
  for (Port port = 0; port < entries.size(); ++port) entries[port] = ports_.Find(port);
  return delivery_.fifo_state().Save(entries);
}

}  // namespace xenkvm::evtchn
