// The engine's inside, shared by its units: engine.cc (port table and EVTCHNOP_* semantics,
// as Xen's event_channel.c), engine_fifo.cc (the FIFO ops) and the delivery path below, which
// stays in this header so Raise inlines into every source and calls the concrete delivery
// mechanism of the mode in force (TwoLevel<Layout64>, TwoLevel<LayoutCompat>, Fifo).
//
// Locks, in the order they are taken:
//   table_mutex_ -> deferred_mutex_ -> FifoQueue::lock -> GuestMemory LayoutGuard ->
//   CachedMapping update mutex.
// table_mutex_ guards the port table's shape (buckets, vCPUs, endpoints, free hint) and every
// EVTCHNOP_*; deferred_mutex_ serialises replay batches. Senders (Raise*, Send) take no mutex:
// they read PortEntry::binding and the bucket and vCPU pointer arrays with acquire loads;
// those are published with release stores under table_mutex_ and never freed before the
// engine. FIFO queue locks are only try-locked on the delivery path (fifo.h).
#pragma once

#include <bit>
#include <chrono>
#include <cstring>
#include <thread>

#include "abi/sync.h"
#include "evtchn/engine.h"
#include "evtchn/fifo.h"
#include "evtchn/two_level.h"
#include "trace/trace.h"

namespace xenkvm::evtchn {

namespace detail {

constexpr uint32_t kMaxVcpus = 128;     // Xen's HVM_MAX_VCPUS
constexpr uint32_t kMaxPirqs = 1024;    // PIRQs a guest may bind
constexpr uint32_t kMaxEndpoints = 64;  // VMM backend endpoints
constexpr uint32_t kDeferredWords = abi::kFifoPorts / 64;

inline bool VirqIsPerVcpu(uint32_t virq) {
  return virq == VIRQ_TIMER || virq == VIRQ_DEBUG || virq == VIRQ_XENOPROF || virq == VIRQ_XENPMU;
}

}  // namespace detail
using detail::kDeferredWords;
using detail::kMaxEndpoints;
using detail::kMaxPirqs;
using detail::kMaxVcpus;
using detail::VirqIsPerVcpu;

struct Engine::Impl {
  Impl(mem::GuestMemory& memory, Options options)
      : memory_(memory),
        options_(options),
        two_level_64_(memory),
        two_level_compat_(memory),
        fifo_(memory) {}

  // Which delivery mechanism is in force: the guest's ABI (latched by xen::Domain through
  // SetAbi) picks the 2-level layout; EVTCHNOP_init_control switches to FIFO, EVTCHNOP_reset
  // back. Written under table_mutex_, read by senders.
  enum class Mode : uint8_t { kTwoLevel64, kTwoLevelCompat, kFifo };

  // ---- state ----
  mem::GuestMemory& memory_;
  const Options options_;
  TwoLevel<abi::Layout64> two_level_64_;
  TwoLevel<abi::LayoutCompat> two_level_compat_;
  Fifo fifo_;
  std::atomic<Mode> mode_{Mode::kTwoLevel64};
  Abi abi_ XENKVM_GUARDED_BY(table_mutex_) = Abi::k64;
  std::atomic<uint32_t> max_ports_{abi::Layout64::kPorts};  // of the mode in force
  mem::CachedMapping shared_info_{abi::kPageSize};
  PortCounterShards counters_;

  Mutex table_mutex_ XENKVM_ACQUIRED_BEFORE(deferred_mutex_);
  std::array<std::atomic<PortBucket*>, kMaxBuckets> buckets_{};  // published under table_mutex_
  std::vector<std::unique_ptr<PortBucket>> bucket_storage_ XENKVM_GUARDED_BY(table_mutex_);
  Port lowest_free_hint_ XENKVM_GUARDED_BY(table_mutex_) = 1;

  std::array<std::atomic<VcpuState*>, kMaxVcpus> vcpus_{};  // published under table_mutex_
  std::vector<std::unique_ptr<VcpuState>> vcpu_storage_ XENKVM_GUARDED_BY(table_mutex_);
  std::atomic<uint32_t> pollers_{0};  // vCPUs inside SCHEDOP_poll

  std::array<std::atomic<Port>, kMaxPirqs> pirq_ports_{};

  struct Endpoint {
    std::atomic<Backend*> backend{nullptr};
    std::atomic<uint32_t> senders{0};  // Sends inside OnGuestSend now (CloseBackend waits)
    Port guest_port = 0;               // table_mutex_; 0 while unconnected
    bool in_use = false;               // table_mutex_; false: free for AddBackendEndpoint
  };
  std::array<Endpoint, kMaxEndpoints> endpoints_{};
  uint32_t endpoint_count_ XENKVM_GUARDED_BY(table_mutex_) = 0;  // endpoint numbers start at 1

  // Ports raised while shared_info was unmapped, waiting for the worker. Senders set bits
  // without a lock; deferred_mutex_ serialises the batches that replay them.
  std::array<std::atomic<uint64_t>, kDeferredWords> deferred_{};
  Mutex deferred_mutex_;
  std::atomic<uint32_t> work_seq_{0};
  std::atomic<bool> stopping_{false};
  std::thread worker_;

  // ---- lookup (any thread) ----
  Mode mode() const { return mode_.load(std::memory_order_acquire); }
  bool fifo() const { return mode() == Mode::kFifo; }
  // The 2-level port-ops vtable for the slow paths (close, unmask, poll, sync).
  PortOps& two_level() {
    return mode() == Mode::kTwoLevelCompat ? static_cast<PortOps&>(two_level_compat_)
                                           : static_cast<PortOps&>(two_level_64_);
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
    if (!guard) {
      counters_.Add(port, Count::kDeferred);
      if (trace::Recorder* t = trace::Active()) [[unlikely]]
        TraceDeliver(t, port, "deferred", RaiseOutcome::kRetry);
      Defer(port);  // the worker reads the binding again under its own guard
      return;
    }
    DeliverLocked(port, *entry, binding, fifo() ? nullptr : MapSharedInfoNoWait());
  }

  uint8_t* MapSharedInfoNoWait() {
    uint8_t* host = shared_info_.Get(memory_);
    return host ? host : shared_info_.TryRefresh(memory_);
  }

  // Caller holds a LayoutGuard under which shared_info is mapped at `shared_info`. A replay
  // of a deferred event was already counted (as deferred) and passes count = false.
  // `shared_info` may be null (unmapped right now): 2-level defers, FIFO does not need it.
  [[gnu::always_inline]] void DeliverLocked(Port port, PortEntry& entry, Binding binding,
                                            uint8_t* shared_info, bool count = true) {
    VcpuState* vcpu = FindVcpu(binding.vcpu);
    if (!vcpu) return;  // bound vCPUs exist: only a port rebound concurrently lands here
    const Mode mode = this->mode();
    RaiseOutcome outcome = RaiseOutcome::kRetry;
    if (mode == Mode::kFifo)
      outcome = fifo_.Raise(port, entry, *vcpu);
    else if (shared_info == nullptr)
      outcome = RaiseOutcome::kRetry;
    else if (mode == Mode::kTwoLevel64)
      outcome = two_level_64_.Raise(port, *vcpu, shared_info);
    else
      outcome = two_level_compat_.Raise(port, *vcpu, shared_info);
    if (count) {
      counters_.Add(port, outcome == RaiseOutcome::kDelivered   ? Count::kDelivered
                          : outcome == RaiseOutcome::kCoalesced ? Count::kCoalesced
                          : outcome == RaiseOutcome::kMasked || outcome == RaiseOutcome::kDropped
                              ? Count::kMasked
                              : Count::kDeferred);
    }
    if (trace::Recorder* t = trace::Active()) [[unlikely]]
      TraceDeliver(t, port, count ? "fast" : "replay", outcome);
    switch (outcome) {
      case RaiseOutcome::kCoalesced:
      case RaiseOutcome::kDropped:
      case RaiseOutcome::kParked:
        return;
      case RaiseOutcome::kRetry:
        Defer(port);
        return;
      case RaiseOutcome::kShadowed:
        RequestSync(*vcpu);
        break;
      case RaiseOutcome::kDelivered:
      case RaiseOutcome::kMasked:
        break;
    }
    WakePollers(port);
  }

  // Out of line: the hot path keeps only the load and the branch.
  [[gnu::noinline, gnu::cold]] static void TraceDeliver(trace::Recorder* t, Port port,
                                                        const char* path, RaiseOutcome outcome) {
    t->Instant("deliver", {"port", port}, {"path", 0, path}, {"outcome", 0, OutcomeName(outcome)});
  }

  static const char* OutcomeName(RaiseOutcome outcome) {
    switch (outcome) {
      case RaiseOutcome::kDelivered:
        return "delivered";
      case RaiseOutcome::kCoalesced:
        return "coalesced";
      case RaiseOutcome::kMasked:
        return "masked";
      case RaiseOutcome::kDropped:
        return "dropped";
      case RaiseOutcome::kParked:
        return "parked";
      case RaiseOutcome::kShadowed:
        return "shadowed";
      case RaiseOutcome::kRetry:
        return "retry";
    }
    return "?";
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
    MutexLock lock(deferred_mutex_);
    bool complete = true;
    auto guard = mem::LayoutGuard::Acquire(memory_);
    uint8_t* shared_info = MapSharedInfo();
    const uint32_t words = (max_ports_.load(std::memory_order_acquire) + 63) / 64;
    for (uint32_t w = 0; w < kDeferredWords; ++w) {
      if (deferred_[w].load(std::memory_order_acquire) == 0) continue;
      if (w >= words) {  // the port limit shrank: those ports are gone
        deferred_[w].store(0, std::memory_order_release);
        continue;
      }
      if (!shared_info && !fifo()) {
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
    if (fifo())
      fifo_.SyncShadow(vcpu, vcpu_info);
    else
      two_level().SyncShadow(vcpu, vcpu_info);
    return true;
  }

  void WorkerLoop() {
    if (trace::Recorder* t = trace::Active()) t->NameThread("evtchn worker");
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
  PortBucket& EnsureBucketLocked(uint32_t index) XENKVM_REQUIRES(table_mutex_) {
    PortBucket* bucket = buckets_[index].load(std::memory_order_relaxed);
    if (bucket) return *bucket;
    bucket_storage_.push_back(std::make_unique<PortBucket>());
    bucket = bucket_storage_.back().get();
    buckets_[index].store(bucket, std::memory_order_release);
    return *bucket;
  }

  // Lowest free port, as Xen allocates them (guests rely on stable numbers). The port stays
  // free until the caller publishes a binding, so a bind that fails later leaks nothing.
  // A free endpoint slot (reusing closed ones) for backend. Endpoint numbers start at 1.
  Result<Port> AddEndpointLocked(Backend* backend) XENKVM_REQUIRES(table_mutex_) {
    Port endpoint = 1;
    while (endpoint <= endpoint_count_ && endpoints_[endpoint].in_use) ++endpoint;
    if (endpoint >= kMaxEndpoints) return Fail(XEN_ENOSPC, "too many endpoints");
    if (endpoint > endpoint_count_) endpoint_count_ = endpoint;
    endpoints_[endpoint].in_use = true;
    endpoints_[endpoint].guest_port = 0;
    endpoints_[endpoint].backend.store(backend, std::memory_order_release);
    return endpoint;
  }

  Result<Port> AllocatePortLocked() XENKVM_REQUIRES(table_mutex_) {
    const uint32_t max_ports = max_ports_.load(std::memory_order_relaxed);
    for (Port port = lowest_free_hint_; port < max_ports; ++port) {
      PortEntry& entry = EnsureBucketLocked(port / kPortsPerBucket).ports[port % kPortsPerBucket];
      if (BindingOf(entry).state != PortState::kFree) continue;
      // Xen's get_free_port skips a port the guest still has on a FIFO queue.
      if (fifo() && fifo_.IsLinked(port)) continue;
      lowest_free_hint_ = port;
      entry.remote_domid = 0;
      entry.source = 0;
      counters_.Restart(port);
      entry.priority.store(EVTCHN_FIFO_PRIORITY_DEFAULT, std::memory_order_relaxed);
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
  Result<> CloseLocked(Port port) XENKVM_REQUIRES(table_mutex_) {
    TRY(UnbindLocked(port));
    ClearClosedLocked(std::span<const Port>(&port, 1));
    return {};
  }

  void CloseAllLocked(std::span<const Port> ports) XENKVM_REQUIRES(table_mutex_) {
    std::vector<Port> closed;
    for (Port port : ports)
      if (UnbindLocked(port)) closed.push_back(port);
    ClearClosedLocked(closed);
  }

  // The second half of a close, for ports already unbound: drain senders, clear pending.
  void ClearClosedLocked(std::span<const Port> ports) XENKVM_REQUIRES(table_mutex_) {
    if (ports.empty()) return;
    memory_.WaitForReaders();
    auto guard = mem::LayoutGuard::Acquire(memory_);
    uint8_t* shared_info = MapSharedInfo();
    for (Port port : ports) {
      deferred_[port / 64].fetch_and(~(uint64_t(1) << (port % 64)), std::memory_order_acq_rel);
      if (fifo())
        fifo_.ClearPending(port);
      else if (shared_info)
        two_level().ClearPending(port, shared_info);
    }
  }

  // Every port in [first, end) that is open.
  std::vector<Port> OpenPortsLocked(Port first, Port end) const XENKVM_REQUIRES(table_mutex_) {
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
  Result<> UnbindLocked(Port port) XENKVM_REQUIRES(table_mutex_) {
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

  static uint32_t PortsOf(Mode mode) {
    return mode == Mode::kFifo             ? abi::kFifoPorts
           : mode == Mode::kTwoLevelCompat ? abi::LayoutCompat::kPorts
                                           : abi::Layout64::kPorts;
  }
  Mode TwoLevelModeLocked() const XENKVM_REQUIRES(table_mutex_) {
    return abi_ == Abi::k64 ? Mode::kTwoLevel64 : Mode::kTwoLevelCompat;
  }

  // Switch delivery mechanism; ports beyond the new limit are closed first.
  void SetModeLocked(Mode new_mode) XENKVM_REQUIRES(table_mutex_) {
    const uint32_t new_max = PortsOf(new_mode);
    CloseAllLocked(OpenPortsLocked(new_max, max_ports_.load(std::memory_order_relaxed)));
    mode_.store(new_mode, std::memory_order_release);
    max_ports_.store(new_max, std::memory_order_release);
    if (lowest_free_hint_ > new_max) lowest_free_hint_ = new_max;
  }

  // ---- FIFO switching (engine_fifo.cc) ----
  Result<uint64_t> FifoPageLocked(uint64_t gfn) XENKVM_REQUIRES(table_mutex_);
  void EnterFifoLocked() XENKVM_REQUIRES(table_mutex_);
  void LeaveFifoLocked() XENKVM_REQUIRES(table_mutex_);

  // Copies a guest page range (a moving shared_info or vcpu_info keeps its contents, as in
  // Xen where the page itself moves). LayoutGuard held.
  void CopyGuestLocked(uint64_t from, uint64_t to, uint64_t length) XENKVM_REQUIRES(table_mutex_) {
    auto src = memory_.TranslateGuarded(from, length);
    auto dst = memory_.TranslateGuarded(to, length);
    if (src && dst) std::memmove(*dst, *src, length);
  }
};

}  // namespace xenkvm::evtchn
