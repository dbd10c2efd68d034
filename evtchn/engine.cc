// Engine: the port table and EVTCHNOP_* semantics of xen/common/event_channel.c, delivery via
// PortOps, and the deferred path for events that arrive while guest pages are unmapped.
//
// Lock order: table_mutex_ -> deferred_mutex_ -> GuestMemory LayoutGuard -> CachedMapping
// update mutex.
// Senders (Raise*, Send) take no mutex: they read PortEntry::binding and the bucket and vCPU
// pointer arrays with acquire loads; those are published with release stores under
// table_mutex_ and never freed before the engine.
#include "evtchn/engine.h"

#include <bit>
#include <chrono>
#include <cstring>

#include "evtchn/two_level.h"

namespace xenkvm::evtchn {

namespace {

constexpr uint32_t kMaxVcpus = 128;     // Xen's HVM_MAX_VCPUS
constexpr uint32_t kMaxPirqs = 1024;    // PIRQs a guest may bind
constexpr uint32_t kMaxEndpoints = 64;  // VMM backend endpoints
constexpr uint32_t kDeferredWords = abi::kFifoPorts / 64;

bool VirqIsPerVcpu(uint32_t virq) {
  return virq == VIRQ_TIMER || virq == VIRQ_DEBUG || virq == VIRQ_XENOPROF || virq == VIRQ_XENPMU;
}

}  // namespace

struct Engine::Impl {
  Impl(mem::GuestMemory& memory, Options options)
      : memory_(memory), options_(options), two_level_64_(memory), two_level_compat_(memory) {}

  // ---- state ----
  mem::GuestMemory& memory_;
  const Options options_;
  TwoLevel<abi::Layout64> two_level_64_;
  TwoLevel<abi::LayoutCompat> two_level_compat_;
  std::atomic<PortOps*> ops_{&two_level_64_};
  std::atomic<uint32_t> max_ports_{abi::Layout64::kPorts};  // ops_->MaxPorts(), for senders
  mem::CachedMapping shared_info_{abi::kPageSize};

  std::mutex table_mutex_;
  std::array<std::atomic<PortBucket*>, kMaxBuckets> buckets_{};  // published under table_mutex_
  std::vector<std::unique_ptr<PortBucket>> bucket_storage_;      // table_mutex_
  Port lowest_free_hint_ = 1;                                    // table_mutex_

  std::array<std::atomic<VcpuState*>, kMaxVcpus> vcpus_{};  // published under table_mutex_
  std::vector<std::unique_ptr<VcpuState>> vcpu_storage_;    // table_mutex_
  std::atomic<uint32_t> pollers_{0};                        // vCPUs inside SCHEDOP_poll

  std::array<std::atomic<Port>, kMaxPirqs> pirq_ports_{};

  struct Endpoint {
    std::atomic<Backend*> backend{nullptr};
    Port guest_port = 0;  // table_mutex_; 0 while unconnected
  };
  std::array<Endpoint, kMaxEndpoints> endpoints_{};
  uint32_t endpoint_count_ = 0;  // table_mutex_; endpoint numbers start at 1

  // Ports raised while shared_info was unmapped, waiting for the worker. Senders set bits
  // without a lock; deferred_mutex_ serialises the batches that replay them.
  std::array<std::atomic<uint64_t>, kDeferredWords> deferred_{};
  std::mutex deferred_mutex_;
  std::atomic<uint32_t> work_seq_{0};
  std::atomic<bool> stopping_{false};
  std::thread worker_;

  // ---- lookup (any thread) ----
  PortOps& ops() const { return *ops_.load(std::memory_order_acquire); }
  // The delivery path calls the concrete implementation so the compiler can inline it.
  [[gnu::always_inline]] RaiseOutcome RaiseInGuest(Port port, VcpuState& vcpu,
                                                   uint8_t* shared_info) {
    if (ops_.load(std::memory_order_acquire) == &two_level_64_)
      return two_level_64_.Raise(port, vcpu, shared_info);
    return two_level_compat_.Raise(port, vcpu, shared_info);
  }

  PortEntry* Find(Port port) const {
    if (port >= max_ports_.load(std::memory_order_acquire)) return nullptr;
    PortBucket* bucket = buckets_[port / kPortsPerBucket].load(std::memory_order_acquire);
    return bucket ? &bucket->ports[port % kPortsPerBucket] : nullptr;
  }

  VcpuState* FindVcpu(uint32_t xen_vcpu_id) const {
    if (xen_vcpu_id >= kMaxVcpus) return nullptr;
    return vcpus_[xen_vcpu_id].load(std::memory_order_acquire);
  }

  // ---- delivery (any thread, never blocks) ----
  [[gnu::always_inline]] void Raise(Port port) {
    PortEntry* entry = Find(port);
    if (!entry) return;
    // The binding is read under the guard: a close drains guard holders before it clears the
    // pending bit, so a sender that saw the port bound has finished by then.
    auto guard = mem::LayoutGuard::TryAcquire(memory_);
    Binding binding = Binding::Unpack(entry->binding.load(std::memory_order_acquire));
    if (!IsDeliverable(binding.state)) return;
    uint8_t* shared_info = guard ? MapSharedInfoNoWait() : nullptr;
    if (!shared_info) {
      entry->deferred.fetch_add(1, std::memory_order_relaxed);
      Defer(port);  // the worker reads the binding again under its own guard
      return;
    }
    DeliverLocked(port, *entry, binding, shared_info);
  }

  uint8_t* MapSharedInfoNoWait() {
    uint8_t* host = shared_info_.Get(memory_);
    return host ? host : shared_info_.TryRefresh(memory_);
  }

  // Caller holds a LayoutGuard under which shared_info is mapped at `shared_info`. A replay
  // of a deferred event was already counted (as deferred) and passes count = false.
  [[gnu::always_inline]] void DeliverLocked(Port port, PortEntry& entry, Binding binding,
                                            uint8_t* shared_info, bool count = true) {
    VcpuState* vcpu = FindVcpu(binding.vcpu);
    if (!vcpu) return;  // bound vCPUs exist: only a port rebound concurrently lands here
    const RaiseOutcome outcome = RaiseInGuest(port, *vcpu, shared_info);
    if (count) {
      std::atomic<uint64_t>& counter = outcome == RaiseOutcome::kDelivered   ? entry.delivered
                                       : outcome == RaiseOutcome::kCoalesced ? entry.coalesced
                                       : outcome == RaiseOutcome::kMasked    ? entry.masked
                                                                             : entry.deferred;
      counter.fetch_add(1, std::memory_order_relaxed);
    }
    if (outcome == RaiseOutcome::kCoalesced) return;
    if (outcome == RaiseOutcome::kShadowed) RequestSync(*vcpu);
    WakePollers(port);
  }

  void WakePollers(Port port) {
    // seq_cst, like the pending fetch_or before it and BeginPoll's registration: either the
    // sender sees the poller or the poller sees the pending bit.
    if (pollers_.load(std::memory_order_seq_cst) == 0) return;
    for (auto& slot : vcpus_) {
      VcpuState* vcpu = slot.load(std::memory_order_acquire);
      if (!vcpu) continue;
      int64_t polled = vcpu->poll_port.load(std::memory_order_seq_cst);
      if (polled == 0 || polled == int64_t(port)) vcpu->sink->WakePoller();
    }
  }

  void RequestSync(VcpuState& vcpu) {
    vcpu.sink->RequestSync();
    KickWorker();
  }

  void Defer(Port port) {
    deferred_[port / 64].fetch_or(uint64_t(1) << (port % 64), std::memory_order_acq_rel);
    KickWorker();
  }

  void KickWorker() {
    work_seq_.fetch_add(1, std::memory_order_release);
    work_seq_.notify_one();
  }

  // ---- blocking paths ----
  // Returns false if something could not be done yet (a page is not backed right now).
  // One batch at a time: a caller that needs "everything deferred before now has landed"
  // (SetSharedInfoGpa, tests) must not return while the worker is halfway through a batch.
  bool RunDeferredWork() {
    std::lock_guard lock(deferred_mutex_);
    bool complete = true;
    auto guard = mem::LayoutGuard::Acquire(memory_);
    uint8_t* shared_info = MapSharedInfo();
    const uint32_t words = (ops().MaxPorts() + 63) / 64;
    for (uint32_t w = 0; w < kDeferredWords; ++w) {
      if (deferred_[w].load(std::memory_order_acquire) == 0) continue;
      if (w >= words) {  // the port limit shrank: those ports are gone
        deferred_[w].store(0, std::memory_order_release);
        continue;
      }
      if (!shared_info) {
        complete = false;
        continue;
      }
      uint64_t bits = deferred_[w].exchange(0, std::memory_order_acq_rel);
      while (bits) {
        Port port = w * 64 + uint32_t(std::countr_zero(bits));
        bits &= bits - 1;
        PortEntry* entry = Find(port);
        if (!entry) continue;
        Binding binding = Binding::Unpack(entry->binding.load(std::memory_order_acquire));
        if (IsDeliverable(binding.state))
          DeliverLocked(port, *entry, binding, shared_info, /*count=*/false);
      }
    }
    for (auto& slot : vcpus_) {
      VcpuState* vcpu = slot.load(std::memory_order_acquire);
      if (vcpu && !SyncLocked(*vcpu)) complete = false;
    }
    return complete;
  }

  uint8_t* MapSharedInfo() {  // LayoutGuard held; may block on the cache's update mutex
    uint8_t* host = shared_info_.Get(memory_);
    return host ? host : shared_info_.Refresh(memory_).value_or(nullptr);
  }

  uint8_t* MapVcpuInfo(VcpuState& vcpu) {  // LayoutGuard held
    uint8_t* host = vcpu.vcpu_info.Get(memory_);
    return host ? host : vcpu.vcpu_info.Refresh(memory_).value_or(nullptr);
  }

  bool SyncLocked(VcpuState& vcpu) {  // LayoutGuard held
    if (vcpu.shadow_sel.load(std::memory_order_acquire) == 0) return true;
    uint8_t* vcpu_info = MapVcpuInfo(vcpu);
    if (!vcpu_info) return false;
    ops().SyncShadow(vcpu, vcpu_info);
    return true;
  }

  void WorkerLoop() {
    auto retry_delay = std::chrono::microseconds(100);
    while (!stopping_.load(std::memory_order_acquire)) {
      uint32_t seen = work_seq_.load(std::memory_order_acquire);
      if (RunDeferredWork()) {
        retry_delay = std::chrono::microseconds(100);
        work_seq_.wait(seen, std::memory_order_acquire);
      } else {
        // A page is unbacked mid layout change; poll until it is back (rare, bounded backoff).
        std::this_thread::sleep_for(retry_delay);
        retry_delay = std::min(retry_delay * 2, std::chrono::microseconds(20000));
      }
    }
  }

  // ---- port table (table_mutex_ held) ----
  PortBucket& EnsureBucketLocked(uint32_t index) {
    PortBucket* bucket = buckets_[index].load(std::memory_order_relaxed);
    if (bucket) return *bucket;
    bucket_storage_.push_back(std::make_unique<PortBucket>());
    bucket = bucket_storage_.back().get();
    buckets_[index].store(bucket, std::memory_order_release);
    return *bucket;
  }

  // Lowest free port, as Xen allocates them (guests rely on stable numbers). The port stays
  // free until the caller publishes a binding, so a bind that fails later leaks nothing.
  Result<Port> AllocatePortLocked() {
    const uint32_t max_ports = ops().MaxPorts();
    for (Port port = lowest_free_hint_; port < max_ports; ++port) {
      PortEntry& entry = EnsureBucketLocked(port / kPortsPerBucket).ports[port % kPortsPerBucket];
      if (BindingOf(entry).state != PortState::kFree) continue;
      lowest_free_hint_ = port;
      entry.remote_domid = 0;
      entry.source = 0;
      for (auto* counter :
           {&entry.sent, &entry.delivered, &entry.coalesced, &entry.masked, &entry.deferred})
        counter->store(0, std::memory_order_relaxed);
      return port;
    }
    return Fail(XEN_ENOSPC, "no free event channel port");
  }

  void Publish(PortEntry& entry, Binding binding) {
    entry.binding.store(binding.Pack(), std::memory_order_release);
  }

  Binding BindingOf(const PortEntry& entry) const {
    return Binding::Unpack(entry.binding.load(std::memory_order_acquire));
  }

  // The 0 or -errno Xen gives for a domain id naming this guest (DOMID_SELF or its own id):
  // other existing domains (the VMM's, id 0) may not be acted on, the rest don't exist.
  Result<> CheckSelf(domid_t dom) const {
    if (dom == DOMID_SELF || dom == options_.domid) return {};
    if (dom == kBackendDomid) return Fail(XEN_EPERM, "may not act on another domain");
    return Fail(XEN_ESRCH, "no such domain");
  }

  // Closing follows Xen's __evtchn_close. Xen's senders hold the channel lock, so once a close
  // returns no send is still setting the port's pending bit; ours take no lock, so the close
  // waits for deliveries in flight (they hold a LayoutGuard) before clearing pending.
  Result<> CloseLocked(Port port) {
    TRY(UnbindLocked(port));
    ClearClosedLocked(std::span<const Port>(&port, 1));
    return {};
  }

  void CloseAllLocked(std::span<const Port> ports) {
    std::vector<Port> closed;
    for (Port port : ports)
      if (UnbindLocked(port)) closed.push_back(port);
    ClearClosedLocked(closed);
  }

  // The second half of a close, for ports already unbound: drain senders, clear pending.
  void ClearClosedLocked(std::span<const Port> ports) {
    if (ports.empty()) return;
    memory_.WaitForReaders();
    auto guard = mem::LayoutGuard::Acquire(memory_);
    uint8_t* shared_info = MapSharedInfo();
    for (Port port : ports) {
      deferred_[port / 64].fetch_and(~(uint64_t(1) << (port % 64)), std::memory_order_acq_rel);
      if (shared_info) ops().ClearPending(port, shared_info);
    }
  }

  // Every port in [first, end) that is open.
  std::vector<Port> OpenPortsLocked(Port first, Port end) const {
    std::vector<Port> open;
    for (Port port = first; port < end; ++port) {
      const PortEntry* entry = Find(port);
      if (entry && BindingOf(*entry).state != PortState::kFree &&
          BindingOf(*entry).state != PortState::kReserved)
        open.push_back(port);
    }
    return open;
  }

  // The state half of a close: unhook the port from its source and mark it free.
  Result<> UnbindLocked(Port port) {
    PortEntry* entry = Find(port);
    if (!entry) return Fail(XEN_EINVAL, "bad port");
    Binding binding = BindingOf(*entry);
    switch (binding.state) {
      case PortState::kFree:
      case PortState::kReserved:
        return Fail(XEN_EINVAL, "port not in use");
      case PortState::kUnbound:
      case PortState::kIpi:
        break;
      case PortState::kPirq:
        pirq_ports_[entry->source].store(0, std::memory_order_release);
        break;
      case PortState::kVirq: {
        VcpuState* owner = FindVcpu(VirqIsPerVcpu(entry->source) ? binding.vcpu : 0);
        if (owner) owner->virq_ports[entry->source].store(0, std::memory_order_release);
        break;
      }
      case PortState::kInterdomain: {
        // The peer goes back to waiting for a connection from this domain, as in Xen.
        PortEntry* peer = Find(binding.peer);
        if (peer && binding.peer != port) {
          Binding peer_binding = BindingOf(*peer);
          peer->remote_domid = options_.domid;
          Publish(*peer, Binding{PortState::kUnbound, peer_binding.vcpu, 0});
        }
        break;
      }
      case PortState::kBackend:
        endpoints_[binding.peer].guest_port = 0;
        break;
    }
    Publish(*entry, Binding{PortState::kFree, 0, 0});
    if (port < lowest_free_hint_) lowest_free_hint_ = port;
    return {};
  }

  void SetPortLimitLocked(PortOps* new_ops) {
    const uint32_t new_max = new_ops->MaxPorts();
    CloseAllLocked(OpenPortsLocked(new_max, ops().MaxPorts()));
    ops_.store(new_ops, std::memory_order_release);
    max_ports_.store(new_max, std::memory_order_release);
    if (lowest_free_hint_ > new_max) lowest_free_hint_ = new_max;
  }

  // Copies a guest page range (a moving shared_info or vcpu_info keeps its contents, as in
  // Xen where the page itself moves). LayoutGuard held.
  void CopyGuestLocked(uint64_t from, uint64_t to, uint64_t length) {
    auto src = memory_.TranslateGuarded(from, length);
    auto dst = memory_.TranslateGuarded(to, length);
    if (src && dst) std::memmove(*dst, *src, length);
  }
};

// ============================== public surface ==============================

Engine::Engine(mem::GuestMemory& memory, Options options)
    : impl_(std::make_unique<Impl>(memory, options)) {
  std::lock_guard lock(impl_->table_mutex_);
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
  std::lock_guard lock(impl_->table_mutex_);
  if (impl_->FindVcpu(xen_vcpu_id)) return Fail(XEN_EEXIST, "vCPU already registered");
  impl_->vcpu_storage_.push_back(std::make_unique<VcpuState>(xen_vcpu_id, sink));
  impl_->vcpus_[xen_vcpu_id].store(impl_->vcpu_storage_.back().get(), std::memory_order_release);
  return {};
}

Result<> Engine::SetVcpuInfoGpa(uint32_t xen_vcpu_id, uint64_t gpa) {
  VcpuState* vcpu = impl_->FindVcpu(xen_vcpu_id);
  if (!vcpu) return Fail(XEN_ENOENT, "no such vCPU");
  if (gpa % abi::kPageSize > abi::kPageSize - abi::Layout64::kVcpuInfoSize || gpa % 8 != 0)
    return Fail(XEN_EINVAL, "vcpu_info must be aligned and within one page");
  std::lock_guard lock(impl_->table_mutex_);
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
    vcpu->shadow_sel.fetch_or(impl_->ops().AllSelectorBits(), std::memory_order_acq_rel);
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
  std::lock_guard lock(impl_->table_mutex_);
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
    const size_t slot_size = impl_->ops().MaxPorts() == abi::Layout64::kPorts
                                 ? abi::Layout64::kVcpuInfoSize
                                 : abi::LayoutCompat::kVcpuInfoSize;
    for (VcpuState* vcpu : following) vcpu->vcpu_info.SetGpa(gpa + vcpu->xen_id * slot_size);
  }
  impl_->RunDeferredWork();  // events that arrived during the move land before we return
  return {};
}

void Engine::SetAbi(Abi abi) {
  std::lock_guard lock(impl_->table_mutex_);
  PortOps* ops = abi == Abi::k64 ? static_cast<PortOps*>(&impl_->two_level_64_)
                                 : static_cast<PortOps*>(&impl_->two_level_compat_);
  if (ops != &impl_->ops()) impl_->SetPortLimitLocked(ops);
}

Abi Engine::abi() const { return &impl_->ops() == &impl_->two_level_64_ ? Abi::k64 : Abi::kCompat; }

uint32_t Engine::MaxPorts() const { return impl_->ops().MaxPorts(); }

Result<Port> Engine::AddBackendEndpoint(Backend* backend) {
  if (!backend) return Fail(XEN_EINVAL, "no backend");
  std::lock_guard lock(impl_->table_mutex_);
  if (impl_->endpoint_count_ + 1 >= kMaxEndpoints) return Fail(XEN_ENOSPC, "too many endpoints");
  Port endpoint = ++impl_->endpoint_count_;
  impl_->endpoints_[endpoint].backend.store(backend, std::memory_order_release);
  return endpoint;
}

Result<Port> Engine::ConnectBackend(Backend* backend) {
  Port endpoint = TRY(AddBackendEndpoint(backend));
  std::lock_guard lock(impl_->table_mutex_);
  Port port = TRY(impl_->AllocatePortLocked());
  PortEntry& entry = *impl_->Find(port);
  entry.remote_domid = kBackendDomid;
  impl_->endpoints_[endpoint].guest_port = port;
  impl_->Publish(entry, Binding{PortState::kBackend, 0, endpoint});
  return port;
}

// ---- EVTCHNOP_* ----

Result<> Engine::AllocUnbound(evtchn_alloc_unbound& op) {
  TRY(impl_->CheckSelf(op.dom));
  std::lock_guard lock(impl_->table_mutex_);
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
  std::lock_guard lock(impl_->table_mutex_);
  Port local = TRY(impl_->AllocatePortLocked());
  PortEntry& entry = *impl_->Find(local);
  if (remote_dom == kBackendDomid) {
    const Port endpoint = op.remote_port;
    if (endpoint == 0 || endpoint > impl_->endpoint_count_ ||
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
  std::lock_guard lock(impl_->table_mutex_);
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
  std::lock_guard lock(impl_->table_mutex_);
  Port port = TRY(impl_->AllocatePortLocked());
  impl_->Publish(*impl_->Find(port), Binding{PortState::kIpi, uint16_t(op.vcpu), 0});
  op.port = port;
  return {};
}

Result<> Engine::BindPirq(evtchn_bind_pirq& op) {
  if (op.pirq >= kMaxPirqs) return Fail(XEN_EINVAL, "bad PIRQ");
  std::lock_guard lock(impl_->table_mutex_);
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
  std::lock_guard lock(impl_->table_mutex_);
  return impl_->CloseLocked(op.port);
}

Result<> Engine::Send(const evtchn_send& op) {
  PortEntry* entry = impl_->Find(op.port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  Binding binding = impl_->BindingOf(*entry);
  switch (binding.state) {
    case PortState::kInterdomain:
      entry->sent.fetch_add(1, std::memory_order_relaxed);
      impl_->Raise(binding.peer);
      return {};
    case PortState::kIpi:
      entry->sent.fetch_add(1, std::memory_order_relaxed);
      impl_->Raise(op.port);
      return {};
    case PortState::kBackend:
      entry->sent.fetch_add(1, std::memory_order_relaxed);
      if (Backend* backend =
              impl_->endpoints_[binding.peer].backend.load(std::memory_order_acquire))
        backend->OnGuestSend(op.port);
      return {};
    case PortState::kUnbound:
      return {};  // Xen silently drops a notification nobody is connected to
    default:
      return Fail(XEN_EINVAL, "port cannot be sent on");
  }
}

Result<> Engine::Status(evtchn_status& op) {
  TRY(impl_->CheckSelf(op.dom));
  std::lock_guard lock(impl_->table_mutex_);
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
  std::lock_guard lock(impl_->table_mutex_);
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
  VcpuState* vcpu = impl_->FindVcpu(impl_->BindingOf(*entry).vcpu);
  auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
  uint8_t* shared_info = impl_->MapSharedInfo();
  if (!shared_info || !vcpu) return {};  // nothing the guest can see is masked
  if (impl_->ops().Unmask(op.port, *vcpu, shared_info)) impl_->SyncLocked(*vcpu);
  return {};
}

Result<> Engine::Reset(const evtchn_reset& op) {
  TRY(impl_->CheckSelf(op.dom));
  std::lock_guard lock(impl_->table_mutex_);
  impl_->CloseAllLocked(impl_->OpenPortsLocked(1, impl_->ops().MaxPorts()));
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
    if (port >= impl_->ops().MaxPorts()) return Fail(XEN_EINVAL, "bad port");
  // Register first, then look: a port raised in between wakes us (no lost wakeup).
  vcpu->poll_port.store(ports.size() == 1 ? int64_t(ports[0]) : 0, std::memory_order_seq_cst);
  impl_->pollers_.fetch_add(1, std::memory_order_seq_cst);
  auto guard = mem::LayoutGuard::Acquire(impl_->memory_);
  uint8_t* shared_info = impl_->MapSharedInfo();
  if (!shared_info) return false;
  for (Port port : ports)
    if (impl_->Find(port) && impl_->ops().IsPending(port, shared_info)) return true;
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
  const PortEntry* entry = impl_->Find(port);
  if (!entry) return {};
  return PortCounters{entry->sent.load(std::memory_order_relaxed),
                      entry->delivered.load(std::memory_order_relaxed),
                      entry->coalesced.load(std::memory_order_relaxed),
                      entry->masked.load(std::memory_order_relaxed),
                      entry->deferred.load(std::memory_order_relaxed)};
}

std::vector<std::pair<Port, PortCounters>> Engine::AllCounters() const {
  std::vector<std::pair<Port, PortCounters>> all;
  for (Port port = 1; port < impl_->ops().MaxPorts(); ++port) {
    PortCounters c = Counters(port);
    if (c.sent || c.delivered || c.coalesced || c.masked || c.deferred) all.emplace_back(port, c);
  }
  return all;
}

}  // namespace xenkvm::evtchn
