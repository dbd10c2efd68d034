// Event delivery for one domain: how a raised port reaches guest memory and the vCPU (Xen's
// evtchn_port_set_pending through the port-ops of event_2l.c / event_fifo.c), the slow path for
// pages that are not mapped right now (a deferred bitmap replayed by a worker thread, per-vCPU
// selector shadows), and pollers. The hot path, Raise, stays in this header so it inlines into
// every caller and calls the concrete mechanism of the mode in force (TwoLevel<Layout64>,
// TwoLevel<LayoutCompat>, Fifo).
//
// Threads and locks: Raise and everything it calls run on any thread and take no mutex: they
// read the port table (port_table.h) through its atomics and touch guest memory with atomics
// under a non-blocking LayoutGuard. deferred_mutex_ serialises replay batches (after the port
// table's mutex in the engine's lock order, event_channels.h). The mode is written under the
// port table's mutex (SetModeLocked) and read by senders with acquire loads.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <thread>

#include "abi/sync.h"
#include "evtchn/fifo.h"
#include "evtchn/port_counters.h"
#include "evtchn/port_ops.h"
#include "evtchn/port_table.h"
#include "evtchn/sink.h"
#include "evtchn/two_level.h"
#include "mem/guest_memory.h"
#include "mem/page_cache.h"
#include "trace/trace.h"

namespace xenkvm::evtchn {

class Delivery {
 public:
  // Which mechanism is in force: the guest's ABI picks the 2-level layout; EVTCHNOP_init_control
  // switches to FIFO, EVTCHNOP_reset back.
  enum class Mode : uint8_t { kTwoLevel64, kTwoLevelCompat, kFifo };
  static uint32_t PortsOf(Mode mode) {
    return mode == Mode::kFifo             ? abi::kFifoPorts
           : mode == Mode::kTwoLevelCompat ? abi::LayoutCompat::kPorts
                                           : abi::Layout64::kPorts;
  }

  Delivery(mem::GuestMemory& memory, PortTable& ports);
  ~Delivery();  // stops the worker
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // The worker thread that replays deferred work (tests may drive RunDeferredWork instead).
  void StartWorker();

  Mode mode() const { return mode_.load(std::memory_order_acquire); }
  bool fifo() const { return mode() == Mode::kFifo; }
  // Switch mechanism. Caller: EventChannels::SetModeLocked, holding the port table's mutex,
  // having closed the ports beyond the new limit.
  void SetMode(Mode mode) { mode_.store(mode, std::memory_order_release); }
  // The 2-level port-ops vtable of the mode in force, for the slow paths (close, unmask, poll,
  // sync), or of a given layout.
  PortOps& two_level() { return TwoLevelOf(mode() == Mode::kTwoLevelCompat); }
  PortOps& TwoLevelOf(bool compat) {
    return compat ? static_cast<PortOps&>(two_level_compat_) : static_cast<PortOps&>(two_level_64_);
  }
  Fifo& fifo_state() { return fifo_; }
  const Fifo& fifo_state() const { return fifo_; }
  mem::CachedMapping& shared_info() { return shared_info_; }
  uint64_t shared_info_gpa() const { return shared_info_.gpa(); }
  PortCounterShards& counters() { return counters_; }
  const PortCounterShards& counters() const { return counters_; }

  // ---- the hot path (any thread, never blocks) ----
  [[gnu::always_inline]] void Raise(Port port) {
    PortEntry* entry = ports_.Find(port);
    if (!entry) return;
    // The binding is read under the guard: a close drains guard holders before it clears the
    // pending bit, so a sender that saw the port bound has finished by then.
    auto guard = mem::LayoutGuard::TryAcquire(memory_);
    const Binding binding = PortTable::BindingOf(*entry);
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

  // Caller holds a LayoutGuard under which shared_info is mapped at `shared_info` (or null:
  // unmapped right now; 2-level defers, FIFO does not need it). A replay of a deferred event
  // was already counted (as deferred) and passes count = false.
  [[gnu::always_inline]] void DeliverLocked(Port port, PortEntry& entry, Binding binding,
                                            uint8_t* shared_info, bool count = true) {
    VcpuState* vcpu = ports_.FindVcpu(binding.vcpu);
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

  // ---- pollers (SCHEDOP_poll) ----
  // Register first, then look: a port raised in between wakes the poller (no lost wakeup).
  void AddPoller(VcpuState& vcpu, std::span<const Port> ports);
  void RemovePoller(VcpuState& vcpu);
  // Whether `port` is pending (even masked). LayoutGuard held.
  bool IsPendingLocked(Port port);

  // ---- blocking paths ----
  // Deliver ports whose fast path found a page unmapped, and sync vCPU shadows. Returns false
  // if something could not be done yet (a page is not backed right now). One batch at a time:
  // a caller that needs "everything deferred before now has landed" (SetSharedInfoGpa, tests)
  // must not return while the worker is halfway through a batch.
  bool RunDeferredWork();
  // Fold the vCPU's shadow selector into its vcpu_info. LayoutGuard held; returns false if
  // vcpu_info is not backed right now.
  bool SyncLocked(VcpuState& vcpu);
  // The second half of a close, for ports already unbound: drain senders in flight, then
  // clear the ports' pending bits and deferred work.
  void ClearClosed(std::span<const Port> ports);
  // Whether the vCPU's evtchn_upcall_pending is set (or owed, while vcpu_info is unmapped).
  bool UpcallPending(VcpuState& vcpu);

  // ---- snapshots (engine_snapshot.cc; no event source runs) ----
  std::vector<Port> DeferredPorts() const;
  // The deferred work becomes exactly `ports`, handed to the worker.
  void RestoreDeferred(std::span<const Port> ports);
  uint8_t* MapSharedInfo() {  // LayoutGuard held; may block on the cache's update mutex
    uint8_t* host = shared_info_.Get(memory_);
    return host ? host : shared_info_.Refresh(memory_).value_or(nullptr);
  }

 private:
  uint8_t* MapSharedInfoNoWait() {
    uint8_t* host = shared_info_.Get(memory_);
    return host ? host : shared_info_.TryRefresh(memory_);
  }
  uint8_t* MapVcpuInfo(VcpuState& vcpu) {  // LayoutGuard held
    uint8_t* host = vcpu.vcpu_info.Get(memory_);
    return host ? host : vcpu.vcpu_info.Refresh(memory_).value_or(nullptr);
  }

  void WakePollers(Port port) {
    // seq_cst, like the pending fetch_or before it and AddPoller's registration: either the
    // sender sees the poller or the poller sees the pending bit.
    if (pollers_.load(std::memory_order_seq_cst) == 0) return;
    WakePollersSlow(port);
  }
  void WakePollersSlow(Port port);
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
  void WorkerLoop();
  // Out of line: the hot path keeps only the load and the branch.
  [[gnu::noinline, gnu::cold]] static void TraceDeliver(trace::Recorder* t, Port port,
                                                        const char* path, RaiseOutcome outcome);

  static constexpr uint32_t kDeferredWords = abi::kFifoPorts / 64;

  mem::GuestMemory& memory_;
  PortTable& ports_;
  TwoLevel<abi::Layout64> two_level_64_;
  TwoLevel<abi::LayoutCompat> two_level_compat_;
  Fifo fifo_;
  std::atomic<Mode> mode_{Mode::kTwoLevel64};
  mem::CachedMapping shared_info_{abi::kPageSize};
  PortCounterShards counters_;
  std::atomic<uint32_t> pollers_{0};  // vCPUs inside SCHEDOP_poll

  // Ports raised while a page was unmapped, waiting for the worker. Senders set bits without a
  // lock; deferred_mutex_ serialises the batches that replay them.
  std::array<std::atomic<uint64_t>, kDeferredWords> deferred_{};
  Mutex deferred_mutex_;
  std::atomic<uint32_t> work_seq_{0};
  std::atomic<bool> stopping_{false};
  std::thread worker_;
};

}  // namespace xenkvm::evtchn
