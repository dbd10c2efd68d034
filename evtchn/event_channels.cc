// The EVTCHNOP_* operations and the VMM's setup calls on a domain's event channels, with the
// semantics and error codes of xen/common/event_channel.c (the FIFO ones are in
// event_channels_fifo.cc); see event_channels.h for the locks.
#include "evtchn/event_channels.h"

#include <cstring>
#include <vector>

namespace xenkvm::evtchn {

EventChannels::EventChannels(mem::GuestMemory& memory, uint16_t domid)
    : memory_(memory), domid_(domid) {}

// ---- setup by the VMM ----

Result<> EventChannels::AddVcpu(uint32_t xen_vcpu_id, VcpuSink* sink) {
  MutexLock lock(ports_.mutex);
  if (xen_vcpu_id < kMaxVcpus && sink != nullptr && !ports_.FindVcpu(xen_vcpu_id))
    delivery_.fifo_state().AddVcpu(xen_vcpu_id);  // before delivery can find the vCPU
  TRY(ports_.AddVcpuLocked(xen_vcpu_id, sink));
  return {};
}

Result<> EventChannels::SetVcpuInfoGpa(uint32_t xen_vcpu_id, uint64_t gpa) {
  VcpuState* vcpu = ports_.FindVcpu(xen_vcpu_id);
  if (!vcpu) return Fail(XEN_ENOENT, "no such vCPU");
  if (gpa % abi::kPageSize > abi::kPageSize - abi::Layout64::kVcpuInfoSize || gpa % 8 != 0)
    return Fail(XEN_EINVAL, "vcpu_info must be aligned and within one page");
  MutexLock lock(ports_.mutex);
  {
    auto guard = mem::LayoutGuard::Acquire(memory_);
    if (!memory_.TranslateGuarded(gpa, abi::Layout64::kVcpuInfoSize))
      return Fail(XEN_EFAULT, "vcpu_info not in guest memory");
  }
  const uint64_t old_gpa = vcpu->vcpu_info.gpa();
  if (old_gpa == gpa) return {};
  // Park new deliveries in the shadow and let those already writing to the old place finish.
  vcpu->vcpu_info.SetGpa(mem::CachedMapping::kNoGpa);
  if (old_gpa != mem::CachedMapping::kNoGpa) memory_.WaitForReaders();
  auto guard = mem::LayoutGuard::Acquire(memory_);
  if (old_gpa != mem::CachedMapping::kNoGpa) {
    CopyGuestLocked(old_gpa, gpa, abi::Layout64::kVcpuInfoSize);
    // FIFO reads only "upcall owed" from the shadow; 2-level rescans every selector bit.
    vcpu->shadow_sel.fetch_or(delivery_.fifo() ? 1 : delivery_.two_level().AllSelectorBits(),
                              std::memory_order_acq_rel);
  }
  vcpu->vcpu_info.SetGpa(gpa);
  delivery_.SyncLocked(*vcpu);
  return {};
}

Result<> EventChannels::SetSharedInfoGpa(uint64_t gpa,
                                         std::span<const uint32_t> default_slot_vcpus) {
  if (gpa % abi::kPageSize != 0) return Fail(XEN_EINVAL, "shared_info must be page aligned");
  std::vector<VcpuState*> following;
  for (uint32_t id : default_slot_vcpus) {
    VcpuState* vcpu = ports_.FindVcpu(id);
    if (!vcpu || id >= abi::Layout64::kLegacyVcpus) return Fail(XEN_EINVAL, "no default slot");
    following.push_back(vcpu);
  }
  MutexLock lock(ports_.mutex);
  {
    auto guard = mem::LayoutGuard::Acquire(memory_);
    if (!memory_.TranslateGuarded(gpa, abi::kPageSize))
      return Fail(XEN_EFAULT, "shared_info not in guest memory");
  }
  const uint64_t old_gpa = delivery_.shared_info().gpa();
  const bool moving = old_gpa != mem::CachedMapping::kNoGpa && old_gpa != gpa;
  // Senders defer from here on; once the deliveries already under way on the old page have
  // drained, the page (pending, mask, default vcpu_info slots) is copied whole.
  delivery_.shared_info().SetGpa(mem::CachedMapping::kNoGpa);
  for (VcpuState* vcpu : following) vcpu->vcpu_info.SetGpa(mem::CachedMapping::kNoGpa);
  if (moving) memory_.WaitForReaders();
  {
    auto guard = mem::LayoutGuard::Acquire(memory_);
    if (moving) CopyGuestLocked(old_gpa, gpa, abi::kPageSize);
    delivery_.shared_info().SetGpa(gpa);
    const size_t slot_size =
        abi_ == Abi::k64 ? abi::Layout64::kVcpuInfoSize : abi::LayoutCompat::kVcpuInfoSize;
    for (VcpuState* vcpu : following) vcpu->vcpu_info.SetGpa(gpa + vcpu->xen_id * slot_size);
  }
  delivery_.RunDeferredWork();  // events that arrived during the move land before we return
  return {};
}

void EventChannels::SetAbi(Abi abi) {
  MutexLock lock(ports_.mutex);
  if (abi == abi_) return;
  abi_ = abi;
  // A FIFO guest keeps its event words (the same in both ABIs); only 2-level's layout moves.
  if (!delivery_.fifo()) SetModeLocked(TwoLevelModeLocked());
}

Abi EventChannels::abi() const {
  MutexLock lock(ports_.mutex);
  return abi_;
}

Result<Port> EventChannels::AddBackendEndpoint(Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  MutexLock lock(ports_.mutex);
  return ports_.AddEndpointLocked(backend);
}

Result<> EventChannels::AddBackendEndpointAt(Port endpoint, Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  MutexLock lock(ports_.mutex);
  return ports_.AddEndpointAtLocked(endpoint, backend);
}

Result<Port> EventChannels::ConnectBackend(Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  MutexLock lock(ports_.mutex);
  Port port = TRY(AllocateLocked());
  auto endpoint = ports_.AddEndpointLocked(backend);
  if (!endpoint) {
    (void)ports_.UnbindLocked(port, domid_);  // a just-allocated unbound port: nothing to drain
    return tl::unexpected(endpoint.error());
  }
  PortEntry& entry = *ports_.Find(port);
  entry.remote_domid = kBackendDomid;
  ports_.ConnectEndpointLocked(*endpoint, port);
  PortTable::Publish(entry, Binding{PortState::kBackend, 0, *endpoint});
  return port;
}

Result<Port> EventChannels::AttachBackend(Port guest_port, Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  MutexLock lock(ports_.mutex);
  PortEntry* entry = ports_.Find(guest_port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  const Binding binding = PortTable::BindingOf(*entry);
  if (binding.state != PortState::kUnbound || entry->remote_domid != kBackendDomid)
    return Fail(XEN_EINVAL, "port is not unbound for domain 0");
  Port endpoint = TRY(ports_.AddEndpointLocked(backend));
  ports_.ConnectEndpointLocked(endpoint, guest_port);
  PortTable::Publish(*entry, Binding{PortState::kBackend, binding.vcpu, endpoint});
  return endpoint;
}

Result<> EventChannels::CloseBackend(Port endpoint) {
  MutexLock lock(ports_.mutex);
  if (!ports_.EndpointInUseLocked(endpoint)) return Fail(XEN_EINVAL, "unknown endpoint");
  if (const Port guest_port = ports_.EndpointGuestPortLocked(endpoint); guest_port != 0) {
    // Xen's evtchn_close of one end of an interdomain channel: the other end goes back to
    // unbound, waiting for the closing domain.
    PortEntry& entry = *ports_.Find(guest_port);
    const Binding binding = PortTable::BindingOf(entry);
    entry.remote_domid = kBackendDomid;
    PortTable::Publish(entry, Binding{PortState::kUnbound, binding.vcpu, 0});
  }
  ports_.CloseEndpointLocked(endpoint);
  return {};
}

// ---- EVTCHNOP_* ----

Result<> EventChannels::AllocUnbound(evtchn_alloc_unbound& op) {
  TRY(CheckSelf(op.dom));
  MutexLock lock(ports_.mutex);
  Port port = TRY(AllocateLocked());
  PortEntry& entry = *ports_.Find(port);
  entry.remote_domid = op.remote_dom == DOMID_SELF ? domid_ : op.remote_dom;
  PortTable::Publish(entry, Binding{PortState::kUnbound, 0, 0});
  op.port = port;
  return {};
}

Result<> EventChannels::BindInterdomain(evtchn_bind_interdomain& op) {
  const domid_t remote_dom = op.remote_dom == DOMID_SELF ? domid_ : op.remote_dom;
  if (remote_dom != domid_ && remote_dom != kBackendDomid) return Fail(XEN_ESRCH, "no such domain");
  MutexLock lock(ports_.mutex);
  Port local = TRY(AllocateLocked());
  PortEntry& entry = *ports_.Find(local);
  if (remote_dom == kBackendDomid) {
    const Port endpoint = op.remote_port;
    if (!ports_.EndpointUnboundLocked(endpoint)) {
      return Fail(XEN_EINVAL, "remote port is not an unbound endpoint");
    }
    ports_.ConnectEndpointLocked(endpoint, local);
    entry.remote_domid = kBackendDomid;
    PortTable::Publish(entry, Binding{PortState::kBackend, 0, endpoint});
  } else {
    PortEntry* remote = ports_.Find(op.remote_port);
    if (!remote || PortTable::BindingOf(*remote).state != PortState::kUnbound ||
        remote->remote_domid != domid_) {
      return Fail(XEN_EINVAL, "remote port is not unbound for this domain");
    }
    Binding remote_binding = PortTable::BindingOf(*remote);
    remote->remote_domid = domid_;
    entry.remote_domid = domid_;
    PortTable::Publish(*remote, Binding{PortState::kInterdomain, remote_binding.vcpu, local});
    PortTable::Publish(entry, Binding{PortState::kInterdomain, 0, op.remote_port});
  }
  op.local_port = local;
  delivery_.Raise(local);  // Xen always marks the new local port pending
  return {};
}

Result<> EventChannels::BindVirq(evtchn_bind_virq& op) {
  if (op.virq >= NR_VIRQS) return Fail(XEN_EINVAL, "bad VIRQ");
  if (!VirqIsPerVcpu(op.virq) && op.vcpu != 0) return Fail(XEN_EINVAL, "global VIRQ on vCPU != 0");
  VcpuState* vcpu = ports_.FindVcpu(op.vcpu);
  if (!vcpu) return Fail(XEN_ENOENT, "no such vCPU");
  MutexLock lock(ports_.mutex);
  if (ports_.VirqPort(op.virq, op.vcpu) != 0) return Fail(XEN_EEXIST, "VIRQ already bound");
  Port port = TRY(AllocateLocked());
  PortEntry& entry = *ports_.Find(port);
  entry.source = op.virq;
  PortTable::Publish(entry, Binding{PortState::kVirq, uint16_t(op.vcpu), 0});
  ports_.SetVirqPortLocked(*vcpu, op.virq, port);
  op.port = port;
  return {};
}

Result<> EventChannels::BindIpi(evtchn_bind_ipi& op) {
  if (!ports_.FindVcpu(op.vcpu)) return Fail(XEN_ENOENT, "no such vCPU");
  MutexLock lock(ports_.mutex);
  Port port = TRY(AllocateLocked());
  PortTable::Publish(*ports_.Find(port), Binding{PortState::kIpi, uint16_t(op.vcpu), 0});
  op.port = port;
  return {};
}

Result<> EventChannels::BindPirq(evtchn_bind_pirq& op) {
  if (op.pirq >= kMaxPirqs) return Fail(XEN_EINVAL, "bad PIRQ");
  MutexLock lock(ports_.mutex);
  if (ports_.PirqPort(op.pirq) != 0) return Fail(XEN_EEXIST, "PIRQ already bound");
  Port port = TRY(AllocateLocked());
  PortEntry& entry = *ports_.Find(port);
  entry.source = op.pirq;
  PortTable::Publish(entry, Binding{PortState::kPirq, 0, 0});
  ports_.SetPirqPortLocked(op.pirq, port);
  op.port = port;
  return {};
}

Result<> EventChannels::Close(const evtchn_close& op) {
  MutexLock lock(ports_.mutex);
  return CloseLocked(op.port);
}

Result<> EventChannels::Send(const evtchn_send& op) {
  PortEntry* entry = ports_.Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  Binding binding = PortTable::BindingOf(*entry);
  switch (binding.state) {
    case PortState::kInterdomain:
      delivery_.counters().Add(op.port, Count::kSent);
      delivery_.Raise(binding.peer);
      return {};
    case PortState::kIpi:
      delivery_.counters().Add(op.port, Count::kSent);
      delivery_.Raise(op.port);
      return {};
    case PortState::kBackend:
      delivery_.counters().Add(op.port, Count::kSent);
      if (Backend* backend = ports_.AcquireBackend(binding.peer)) backend->OnGuestSend(op.port);
      ports_.ReleaseBackend(binding.peer);
      return {};
    case PortState::kUnbound:
      return {};  // Xen silently drops a notification nobody is connected to
    default:
      return Fail(XEN_EINVAL, "port cannot be sent on");
  }
}

Result<> EventChannels::Status(evtchn_status& op) {
  TRY(CheckSelf(op.dom));
  MutexLock lock(ports_.mutex);
  PortEntry* entry = ports_.Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  Binding binding = PortTable::BindingOf(*entry);
  op.vcpu = binding.vcpu;
  std::memset(&op.u, 0, sizeof(op.u));
  switch (binding.state) {
    case PortState::kFree:
    case PortState::kReserved:
      op.status = EVTCHNSTAT_closed;
      break;
    case PortState::kUnbound:
      op.status = EVTCHNSTAT_unbound;
      op.u.unbound.dom = entry->remote_domid;
      break;
    case PortState::kInterdomain:
    case PortState::kBackend:
      op.status = EVTCHNSTAT_interdomain;
      op.u.interdomain.dom = entry->remote_domid;
      op.u.interdomain.port = binding.peer;
      break;
    case PortState::kVirq:
      op.status = EVTCHNSTAT_virq;
      op.u.virq = entry->source;
      break;
    case PortState::kIpi:
      op.status = EVTCHNSTAT_ipi;
      break;
    case PortState::kPirq:
      op.status = EVTCHNSTAT_pirq;
      op.u.pirq = entry->source;
      break;
  }
  return {};
}

Result<> EventChannels::BindVcpu(const evtchn_bind_vcpu& op) {
  if (!ports_.FindVcpu(op.vcpu)) return Fail(XEN_ENOENT, "no such vCPU");
  MutexLock lock(ports_.mutex);
  PortEntry* entry = ports_.Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  Binding binding = PortTable::BindingOf(*entry);
  switch (binding.state) {
    case PortState::kVirq:
      if (VirqIsPerVcpu(entry->source)) return Fail(XEN_EINVAL, "per-vCPU VIRQ cannot move");
      break;
    case PortState::kUnbound:
    case PortState::kInterdomain:
    case PortState::kBackend:
    case PortState::kPirq:
      break;
    default:
      return Fail(XEN_EINVAL, "port cannot be rebound");
  }
  binding.vcpu = uint16_t(op.vcpu);
  PortTable::Publish(*entry, binding);
  return {};
}

Result<> EventChannels::Unmask(const evtchn_unmask& op) {
  PortEntry* entry = ports_.Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  const Binding binding = PortTable::BindingOf(*entry);
  VcpuState* vcpu = ports_.FindVcpu(binding.vcpu);
  auto guard = mem::LayoutGuard::Acquire(memory_);
  if (delivery_.fifo()) {
    // Xen's evtchn_fifo_unmask: clear MASKED, relink if pending (not a new event: uncounted).
    if (delivery_.fifo_state().ClearMask(op.port) && vcpu && IsDeliverable(binding.state))
      delivery_.DeliverLocked(op.port, *entry, binding, nullptr, /*count=*/false);
    return {};
  }
  uint8_t* shared_info = delivery_.MapSharedInfo();
  if (!shared_info || !vcpu) return {};  // nothing the guest can see is masked
  if (delivery_.two_level().Unmask(op.port, *vcpu, shared_info)) delivery_.SyncLocked(*vcpu);
  return {};
}

Result<> EventChannels::Reset(const evtchn_reset& op) {
  TRY(CheckSelf(op.dom));
  MutexLock lock(ports_.mutex);
  CloseAllLocked(ports_.OpenPortsLocked(1, ports_.max_ports()));
  // Xen's evtchn_reset: a FIFO guest goes back to 2-level.
  if (delivery_.fifo()) LeaveFifoLocked();
  return {};
}

// ---- vCPU side ----

void EventChannels::SyncVcpu(uint32_t xen_vcpu_id) {
  VcpuState* vcpu = ports_.FindVcpu(xen_vcpu_id);
  if (!vcpu) return;
  auto guard = mem::LayoutGuard::Acquire(memory_);
  delivery_.SyncLocked(*vcpu);
}

Result<bool> EventChannels::BeginPoll(uint32_t xen_vcpu_id, std::span<const Port> ports) {
  VcpuState* vcpu = ports_.FindVcpu(xen_vcpu_id);
  if (!vcpu) return Fail(XEN_ENOENT, "no such vCPU");
  for (Port port : ports)
    if (port >= ports_.max_ports()) return Fail(XEN_EINVAL, "bad port");
  delivery_.AddPoller(*vcpu, ports);  // first register, then look
  auto guard = mem::LayoutGuard::Acquire(memory_);
  for (Port port : ports)
    if (delivery_.IsPendingLocked(port)) return true;
  return false;
}

void EventChannels::EndPoll(uint32_t xen_vcpu_id) {
  if (VcpuState* vcpu = ports_.FindVcpu(xen_vcpu_id)) delivery_.RemovePoller(*vcpu);
}

bool EventChannels::UpcallPending(uint32_t xen_vcpu_id) {
  VcpuState* vcpu = ports_.FindVcpu(xen_vcpu_id);
  return vcpu && delivery_.UpcallPending(*vcpu);
}

// ---- helpers (port table mutex held unless said otherwise) ----

Result<Port> EventChannels::AllocateLocked() {
  const bool fifo = delivery_.fifo();
  const Port port = TRY(
      ports_.AllocateLocked([&](Port p) { return fifo && delivery_.fifo_state().IsLinked(p); }));
  delivery_.counters().Restart(port);
  return port;
}

Result<> EventChannels::CheckSelf(domid_t dom) const {
  if (dom == DOMID_SELF || dom == domid_) return {};
  if (dom == kBackendDomid) return Fail(XEN_EPERM, "may not act on another domain");
  return Fail(XEN_ESRCH, "no such domain");
}

Result<> EventChannels::CloseLocked(Port port) {
  TRY(ports_.UnbindLocked(port, domid_));
  delivery_.ClearClosed(std::span<const Port>(&port, 1));
  return {};
}

void EventChannels::CloseAllLocked(std::span<const Port> ports) {
  std::vector<Port> closed;
  for (Port port : ports)
    if (ports_.UnbindLocked(port, domid_)) closed.push_back(port);
  delivery_.ClearClosed(closed);
}

void EventChannels::SetModeLocked(Delivery::Mode mode) {
  const uint32_t new_max = Delivery::PortsOf(mode);
  CloseAllLocked(ports_.OpenPortsLocked(new_max, ports_.max_ports()));
  delivery_.SetMode(mode);
  ports_.SetMaxPortsLocked(new_max);
}

void EventChannels::CopyGuestLocked(uint64_t from, uint64_t to, uint64_t length) {
  auto src = memory_.TranslateGuarded(from, length);
  auto dst = memory_.TranslateGuarded(to, length);
  if (src && dst) std::memmove(*dst, *src, length);
}

}  // namespace xenkvm::evtchn
