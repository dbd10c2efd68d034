// Engine: the port table and EVTCHNOP_* semantics of xen/common/event_channel.c (the FIFO
// ops are in engine_fifo.cc; delivery and the deferred path in engine_impl.h, which also
// states the locks and their order).
#include "evtchn/engine.h"

#include "evtchn/engine_impl.h"

namespace xenkvm::evtchn {

// ============================== public surface ==============================

Engine::Engine(mem::GuestMemory& memory, Options options)
    : impl_(std::make_unique<Impl>(memory, options)) {
  MutexLock lock(impl_->table_mutex_);
  impl_->Publish(impl_->EnsureBucketLocked(0).ports[0], Binding{PortState::kReserved});
  if (options.start_worker) impl_->worker_ = std::thread([this] { impl_->WorkerLoop(); });
}

Engine::~Engine() {
  if (impl_->worker_.joinable()) {
    impl_->stopping_.store(true, std::memory_order_release);
    impl_->KickWorker();
    impl_->worker_.join();
  }
}

// ---- setup ----

Result<> Engine::AddVcpu(uint32_t xen_vcpu_id, VcpuSink* sink) {
  if (xen_vcpu_id >= kMaxVcpus || sink == nullptr) return Fail(XEN_EINVAL, "bad vCPU");
  MutexLock lock(impl_->table_mutex_);
  if (impl_->FindVcpu(xen_vcpu_id)) return Fail(XEN_EEXIST, "vCPU already registered");
  impl_->vcpu_storage_.push_back(std::make_unique<VcpuState>(xen_vcpu_id, sink));
  impl_->fifo_.AddVcpu(xen_vcpu_id);
  impl_->vcpus_[xen_vcpu_id].store(impl_->vcpu_storage_.back().get(), std::memory_order_release);
  return {};
}

Result<> Engine::SetVcpuInfoGpa(uint32_t xen_vcpu_id, uint64_t gpa) {
  VcpuState* vcpu = impl_->FindVcpu(xen_vcpu_id);
  if (!vcpu) return Fail(XEN_ENOENT, "no such vCPU");
  if (gpa % abi::kPageSize > abi::kPageSize - abi::Layout64::kVcpuInfoSize || gpa % 8 != 0)
    return Fail(XEN_EINVAL, "vcpu_info must be aligned and within one page");
  MutexLock lock(impl_->table_mutex_);
  {
    auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
    if (!impl_->memory_.TranslateGuarded(gpa, abi::Layout64::kVcpuInfoSize))
      return Fail(XEN_EFAULT, "vcpu_info not in guest memory");
  }
  const uint64_t old_gpa = vcpu->vcpu_info.gpa();
  if (old_gpa == gpa) return {};
  // Park new deliveries in the shadow and let those already writing to the old place finish.
  vcpu->vcpu_info.SetGpa(mem::CachedMapping::kNoGpa);
  if (old_gpa != mem::CachedMapping::kNoGpa) impl_->memory_.WaitForReaders();
  auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
  if (old_gpa != mem::CachedMapping::kNoGpa) {
    impl_->CopyGuestLocked(old_gpa, gpa, abi::Layout64::kVcpuInfoSize);
    // FIFO reads only "upcall owed" from the shadow; 2-level rescans every selector bit.
    vcpu->shadow_sel.fetch_or(impl_->fifo() ? 1 : impl_->two_level().AllSelectorBits(),
                              std::memory_order_acq_rel);
  }
  vcpu->vcpu_info.SetGpa(gpa);
  impl_->SyncLocked(*vcpu);
  return {};
}

Result<> Engine::SetSharedInfoGpa(uint64_t gpa, std::span<const uint32_t> default_slot_vcpus) {
  if (gpa % abi::kPageSize != 0) return Fail(XEN_EINVAL, "shared_info must be page aligned");
  std::vector<VcpuState*> following;
  for (uint32_t id : default_slot_vcpus) {
    VcpuState* vcpu = impl_->FindVcpu(id);
    if (!vcpu || id >= abi::Layout64::kLegacyVcpus) return Fail(XEN_EINVAL, "no default slot");
    following.push_back(vcpu);
  }
  MutexLock lock(impl_->table_mutex_);
  {
    auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
    if (!impl_->memory_.TranslateGuarded(gpa, abi::kPageSize))
      return Fail(XEN_EFAULT, "shared_info not in guest memory");
  }
  const uint64_t old_gpa = impl_->shared_info_.gpa();
  const bool moving = old_gpa != mem::CachedMapping::kNoGpa && old_gpa != gpa;
  // Senders defer from here on; once the deliveries already under way on the old page have
  // drained, the page (pending, mask, default vcpu_info slots) is copied whole.
  impl_->shared_info_.SetGpa(mem::CachedMapping::kNoGpa);
  for (VcpuState* vcpu : following) vcpu->vcpu_info.SetGpa(mem::CachedMapping::kNoGpa);
  if (moving) impl_->memory_.WaitForReaders();
  {
    auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
    if (moving) impl_->CopyGuestLocked(old_gpa, gpa, abi::kPageSize);
    impl_->shared_info_.SetGpa(gpa);
    const size_t slot_size =
        impl_->abi_ == Abi::k64 ? abi::Layout64::kVcpuInfoSize : abi::LayoutCompat::kVcpuInfoSize;
    for (VcpuState* vcpu : following) vcpu->vcpu_info.SetGpa(gpa + vcpu->xen_id * slot_size);
  }
  impl_->RunDeferredWork();  // events that arrived during the move land before we return
  return {};
}

void Engine::SetAbi(Abi abi) {
  MutexLock lock(impl_->table_mutex_);
  if (abi == impl_->abi_) return;
  impl_->abi_ = abi;
  // A FIFO guest keeps its event words (the same in both ABIs); only 2-level's layout moves.
  if (!impl_->fifo()) impl_->SetModeLocked(impl_->TwoLevelModeLocked());
}

Abi Engine::abi() const {
  MutexLock lock(impl_->table_mutex_);
  return impl_->abi_;
}

uint32_t Engine::MaxPorts() const { return impl_->max_ports_.load(std::memory_order_acquire); }

Result<Port> Engine::AddBackendEndpoint(Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  MutexLock lock(impl_->table_mutex_);
  return impl_->AddEndpointLocked(backend);
}

Result<Port> Engine::ConnectBackend(Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  MutexLock lock(impl_->table_mutex_);
  Port port = TRY(impl_->AllocatePortLocked());
  auto endpoint = impl_->AddEndpointLocked(backend);
  if (!endpoint) {
    (void)impl_->UnbindLocked(port);  // a just-allocated unbound port: nothing to drain
    return tl::unexpected(endpoint.error());
  }
  PortEntry& entry = *impl_->Find(port);
  entry.remote_domid = kBackendDomid;
  impl_->endpoints_[*endpoint].guest_port = port;
  impl_->Publish(entry, Binding{PortState::kBackend, 0, *endpoint});
  return port;
}

Result<Port> Engine::AttachBackend(Port guest_port, Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  MutexLock lock(impl_->table_mutex_);
  PortEntry* entry = impl_->Find(guest_port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  const Binding binding = impl_->BindingOf(*entry);
  if (binding.state != PortState::kUnbound || entry->remote_domid != kBackendDomid)
    return Fail(XEN_EINVAL, "port is not unbound for domain 0");
  Port endpoint = TRY(impl_->AddEndpointLocked(backend));
  impl_->endpoints_[endpoint].guest_port = guest_port;
  impl_->Publish(*entry, Binding{PortState::kBackend, binding.vcpu, endpoint});
  return endpoint;
}

Result<> Engine::CloseBackend(Port endpoint) {
  MutexLock lock(impl_->table_mutex_);
  if (endpoint == 0 || endpoint > impl_->endpoint_count_ || !impl_->endpoints_[endpoint].in_use)
    return Fail(XEN_EINVAL, "unknown endpoint");
  Impl::Endpoint& ep = impl_->endpoints_[endpoint];
  if (ep.guest_port != 0) {
    // Xen's evtchn_close of one end of an interdomain channel: the other end goes back to
    // unbound, waiting for the closing domain.
    PortEntry& entry = *impl_->Find(ep.guest_port);
    const Binding binding = impl_->BindingOf(entry);
    entry.remote_domid = kBackendDomid;
    impl_->Publish(entry, Binding{PortState::kUnbound, binding.vcpu, 0});
    ep.guest_port = 0;
  }
  ep.backend.store(nullptr, std::memory_order_seq_cst);
  // A Send that loaded the pointer before the store may still be inside OnGuestSend.
  while (ep.senders.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  ep.in_use = false;
  return {};
}

// ---- EVTCHNOP_* ----

Result<> Engine::AllocUnbound(evtchn_alloc_unbound& op) {
  TRY(impl_->CheckSelf(op.dom));
  MutexLock lock(impl_->table_mutex_);
  Port port = TRY(impl_->AllocatePortLocked());
  PortEntry& entry = *impl_->Find(port);
  entry.remote_domid = op.remote_dom == DOMID_SELF ? impl_->options_.domid : op.remote_dom;
  impl_->Publish(entry, Binding{PortState::kUnbound, 0, 0});
  op.port = port;
  return {};
}

Result<> Engine::BindInterdomain(evtchn_bind_interdomain& op) {
  const domid_t remote_dom = op.remote_dom == DOMID_SELF ? impl_->options_.domid : op.remote_dom;
  if (remote_dom != impl_->options_.domid && remote_dom != kBackendDomid)
    return Fail(XEN_ESRCH, "no such domain");
  MutexLock lock(impl_->table_mutex_);
  Port local = TRY(impl_->AllocatePortLocked());
  PortEntry& entry = *impl_->Find(local);
  if (remote_dom == kBackendDomid) {
    const Port endpoint = op.remote_port;
    if (endpoint == 0 || endpoint > impl_->endpoint_count_ || !impl_->endpoints_[endpoint].in_use ||
        impl_->endpoints_[endpoint].guest_port != 0) {
      return Fail(XEN_EINVAL, "remote port is not an unbound endpoint");
    }
    impl_->endpoints_[endpoint].guest_port = local;
    entry.remote_domid = kBackendDomid;
    impl_->Publish(entry, Binding{PortState::kBackend, 0, endpoint});
  } else {
    PortEntry* remote = impl_->Find(op.remote_port);
    if (!remote || impl_->BindingOf(*remote).state != PortState::kUnbound ||
        remote->remote_domid != impl_->options_.domid) {
      return Fail(XEN_EINVAL, "remote port is not unbound for this domain");
    }
    Binding remote_binding = impl_->BindingOf(*remote);
    remote->remote_domid = impl_->options_.domid;
    entry.remote_domid = impl_->options_.domid;
    impl_->Publish(*remote, Binding{PortState::kInterdomain, remote_binding.vcpu, local});
    impl_->Publish(entry, Binding{PortState::kInterdomain, 0, op.remote_port});
  }
  op.local_port = local;
  impl_->Raise(local);  // Xen always marks the new local port pending
  return {};
}

Result<> Engine::BindVirq(evtchn_bind_virq& op) {
  if (op.virq >= NR_VIRQS) return Fail(XEN_EINVAL, "bad VIRQ");
  if (!VirqIsPerVcpu(op.virq) && op.vcpu != 0) return Fail(XEN_EINVAL, "global VIRQ on vCPU != 0");
  VcpuState* vcpu = impl_->FindVcpu(op.vcpu);
  if (!vcpu) return Fail(XEN_ENOENT, "no such vCPU");
  MutexLock lock(impl_->table_mutex_);
  if (vcpu->virq_ports[op.virq].load(std::memory_order_relaxed) != 0)
    return Fail(XEN_EEXIST, "VIRQ already bound");
  Port port = TRY(impl_->AllocatePortLocked());
  PortEntry& entry = *impl_->Find(port);
  entry.source = op.virq;
  impl_->Publish(entry, Binding{PortState::kVirq, uint16_t(op.vcpu), 0});
  vcpu->virq_ports[op.virq].store(port, std::memory_order_release);
  op.port = port;
  return {};
}

Result<> Engine::BindIpi(evtchn_bind_ipi& op) {
  if (!impl_->FindVcpu(op.vcpu)) return Fail(XEN_ENOENT, "no such vCPU");
  MutexLock lock(impl_->table_mutex_);
  Port port = TRY(impl_->AllocatePortLocked());
  impl_->Publish(*impl_->Find(port), Binding{PortState::kIpi, uint16_t(op.vcpu), 0});
  op.port = port;
  return {};
}

Result<> Engine::BindPirq(evtchn_bind_pirq& op) {
  if (op.pirq >= kMaxPirqs) return Fail(XEN_EINVAL, "bad PIRQ");
  MutexLock lock(impl_->table_mutex_);
  if (impl_->pirq_ports_[op.pirq].load(std::memory_order_relaxed) != 0)
    return Fail(XEN_EEXIST, "PIRQ already bound");
  Port port = TRY(impl_->AllocatePortLocked());
  PortEntry& entry = *impl_->Find(port);
  entry.source = op.pirq;
  impl_->Publish(entry, Binding{PortState::kPirq, 0, 0});
  impl_->pirq_ports_[op.pirq].store(port, std::memory_order_release);
  op.port = port;
  return {};
}

Result<> Engine::Close(const evtchn_close& op) {
  MutexLock lock(impl_->table_mutex_);
  return impl_->CloseLocked(op.port);
}

Result<> Engine::Send(const evtchn_send& op) {
  PortEntry* entry = impl_->Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  Binding binding = impl_->BindingOf(*entry);
  switch (binding.state) {
    case PortState::kInterdomain:
      impl_->counters_.Add(op.port, Count::kSent);
      impl_->Raise(binding.peer);
      return {};
    case PortState::kIpi:
      impl_->counters_.Add(op.port, Count::kSent);
      impl_->Raise(op.port);
      return {};
    case PortState::kBackend: {
      impl_->counters_.Add(op.port, Count::kSent);
      Impl::Endpoint& ep = impl_->endpoints_[binding.peer];
      ep.senders.fetch_add(1, std::memory_order_seq_cst);  // CloseBackend waits for us
      if (Backend* backend = ep.backend.load(std::memory_order_seq_cst))
        backend->OnGuestSend(op.port);
      ep.senders.fetch_sub(1, std::memory_order_release);
      return {};
    }
    case PortState::kUnbound:
      return {};  // Xen silently drops a notification nobody is connected to
    default:
      return Fail(XEN_EINVAL, "port cannot be sent on");
  }
}

Result<> Engine::Status(evtchn_status& op) {
  TRY(impl_->CheckSelf(op.dom));
  MutexLock lock(impl_->table_mutex_);
  PortEntry* entry = impl_->Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  Binding binding = impl_->BindingOf(*entry);
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

Result<> Engine::BindVcpu(const evtchn_bind_vcpu& op) {
  if (!impl_->FindVcpu(op.vcpu)) return Fail(XEN_ENOENT, "no such vCPU");
  MutexLock lock(impl_->table_mutex_);
  PortEntry* entry = impl_->Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  Binding binding = impl_->BindingOf(*entry);
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
  impl_->Publish(*entry, binding);
  return {};
}

Result<> Engine::Unmask(const evtchn_unmask& op) {
  PortEntry* entry = impl_->Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  const Binding binding = impl_->BindingOf(*entry);
  VcpuState* vcpu = impl_->FindVcpu(binding.vcpu);
  auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
  if (impl_->fifo()) {
    // Xen's evtchn_fifo_unmask: clear MASKED, relink if pending (not a new event: uncounted).
    if (impl_->fifo_.ClearMask(op.port) && vcpu && IsDeliverable(binding.state))
      impl_->DeliverLocked(op.port, *entry, binding, nullptr, /*count=*/false);
    return {};
  }
  uint8_t* shared_info = impl_->MapSharedInfo();
  if (!shared_info || !vcpu) return {};  // nothing the guest can see is masked
  if (impl_->two_level().Unmask(op.port, *vcpu, shared_info)) impl_->SyncLocked(*vcpu);
  return {};
}

Result<> Engine::Reset(const evtchn_reset& op) {
  TRY(impl_->CheckSelf(op.dom));
  MutexLock lock(impl_->table_mutex_);
  impl_->CloseAllLocked(impl_->OpenPortsLocked(1, impl_->max_ports_.load()));
  // Xen's evtchn_reset: a FIFO guest goes back to 2-level.
  if (impl_->fifo()) impl_->LeaveFifoLocked();
  return {};
}

// ---- sources ----

void Engine::RaisePort(Port port) { impl_->Raise(port); }

bool Engine::RaiseVirq(uint32_t virq, uint32_t xen_vcpu_id) {
  if (virq >= NR_VIRQS) return false;
  VcpuState* owner = impl_->FindVcpu(VirqIsPerVcpu(virq) ? xen_vcpu_id : 0);
  if (!owner) return false;
  Port port = owner->virq_ports[virq].load(std::memory_order_acquire);
  if (port == 0) return false;
  impl_->Raise(port);
  return true;
}

bool Engine::RaisePirq(uint32_t pirq) {
  if (pirq >= kMaxPirqs) return false;
  Port port = impl_->pirq_ports_[pirq].load(std::memory_order_acquire);
  if (port == 0) return false;
  impl_->Raise(port);
  return true;
}

// ---- vCPU side ----

void Engine::SyncVcpu(uint32_t xen_vcpu_id) {
  VcpuState* vcpu = impl_->FindVcpu(xen_vcpu_id);
  if (!vcpu) return;
  auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
  impl_->SyncLocked(*vcpu);
}

Result<bool> Engine::BeginPoll(uint32_t xen_vcpu_id, std::span<const Port> ports) {
  VcpuState* vcpu = impl_->FindVcpu(xen_vcpu_id);
  if (!vcpu) return Fail(XEN_ENOENT, "no such vCPU");
  for (Port port : ports)
    if (port >= impl_->max_ports_.load()) return Fail(XEN_EINVAL, "bad port");
  // Register first, then look: a port raised in between wakes us (no lost wakeup).
  vcpu->poll_port.store(ports.size() == 1 ? int64_t(ports[0]) : 0, std::memory_order_seq_cst);
  impl_->pollers_.fetch_add(1, std::memory_order_seq_cst);
  auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
  if (impl_->fifo()) {
    for (Port port : ports)
      if (impl_->Find(port) && impl_->fifo_.IsPending(port)) return true;
    return false;
  }
  uint8_t* shared_info = impl_->MapSharedInfo();
  if (!shared_info) return false;
  for (Port port : ports)
    if (impl_->Find(port) && impl_->two_level().IsPending(port, shared_info)) return true;
  return false;
}

void Engine::EndPoll(uint32_t xen_vcpu_id) {
  VcpuState* vcpu = impl_->FindVcpu(xen_vcpu_id);
  if (!vcpu || vcpu->poll_port.exchange(-1, std::memory_order_acq_rel) == -1) return;
  impl_->pollers_.fetch_sub(1, std::memory_order_acq_rel);
}

bool Engine::UpcallPending(uint32_t xen_vcpu_id) {
  VcpuState* vcpu = impl_->FindVcpu(xen_vcpu_id);
  if (!vcpu) return false;
  auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
  uint8_t* vcpu_info = impl_->MapVcpuInfo(*vcpu);
  if (!vcpu_info) return vcpu->shadow_sel.load(std::memory_order_acquire) != 0;
  return mem::GuestAtomic<uint8_t>(vcpu_info + abi::Layout64::kUpcallPending)
             .load(std::memory_order_acquire) != 0;
}

void Engine::RunDeferredWork() { impl_->RunDeferredWork(); }

PortCounters Engine::Counters(Port port) const {
  if (!impl_->Find(port)) return {};
  return impl_->counters_.Get(port);
}

std::vector<std::pair<Port, PortCounters>> Engine::AllCounters() const {
  std::vector<std::pair<Port, PortCounters>> all;
  for (Port port = 1; port < MaxPorts(); ++port) {
    PortCounters c = Counters(port);
    if (c.sent || c.delivered || c.coalesced || c.masked || c.deferred) all.emplace_back(port, c);
  }
  return all;
}

}  // namespace xenkvm::evtchn
