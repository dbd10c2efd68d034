// The event-channel engine of one guest domain: the port table, the EVTCHNOP_* operations with
// Xen's semantics (xen/include/public/event_channel.h, xen/common/event_channel.c), and
// delivery into guest memory: 2-level (per layout) or FIFO (event_fifo.c's protocol), as the
// guest chooses with EVTCHNOP_init_control / EVTCHNOP_reset.
//
// Threads and locks (the full order is in event_channels.h):
//  - EVTCHNOP_* and setup calls take the port table's mutex. They run on vCPU threads or the VMM.
//  - Delivery (Raise*, Send to an IPI/loopback port) never takes that mutex and never blocks:
//    it reads per-port atomics and touches guest memory with atomics under a non-blocking
//    LayoutGuard. When a page it needs is not mapped right now it defers the work to the
//    engine's worker (ports) or to the vCPU's next entry (selector shadow) — nothing is lost.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "abi/result.h"
#include "abi/xen.h"
#include "evtchn/fifo.h"
#include "evtchn/port_counters.h"
#include "evtchn/port_table.h"
#include "evtchn/sink.h"
#include "mem/guest_memory.h"
#include "mem/page_cache.h"
#include "snapshot/codec.h"

namespace xenkvm::evtchn {

inline constexpr uint32_t kNoVcpu = UINT32_MAX;
inline constexpr uint16_t kBackendDomid = 0;  // VMM-side endpoints appear as domain 0

enum class Abi : uint8_t { k64, kCompat };  // which shared_info layout the guest uses

class Engine {
 public:
  struct Options {
    uint16_t domid = 1;        // this guest's domain id (DOMID_SELF resolves to it)
    bool start_worker = true;  // false: tests drive RunDeferredWork() themselves
  };
  Engine(mem::GuestMemory& memory, Options options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- setup by the VMM ----
  // Registers a vCPU by its Xen vCPU id (not KVM's index); sink outlives the engine's use.
  Result<> AddVcpu(uint32_t xen_vcpu_id, VcpuSink* sink);
  // Where this vCPU's vcpu_info lives (Xen's default slot or a registered one). The engine
  // assumes no default: the VMM must call this for every vCPU that can receive events.
  // Moving a registered vcpu_info follows Xen's map_vcpu_info: the new one keeps the old
  // contents and gets every selector bit set so the guest rescans. Takes effect for deliveries
  // that start after it returns; none in flight is lost.
  Result<> SetVcpuInfoGpa(uint32_t xen_vcpu_id, uint64_t gpa);
  // Where shared_info lives. Moving it keeps its contents (in Xen the page itself moves) and
  // moves the listed vCPUs' vcpu_info along with it (those still in their default slot
  // shared_info.vcpu_info[id]), in one step with no event lost in between. Before the first
  // call the VMM fills the page as Xen would (zeroed, wallclock set).
  Result<> SetSharedInfoGpa(uint64_t gpa, std::span<const uint32_t> default_slot_vcpus = {});
  // Port limit and layout follow the guest's mode (64-bit: 4096 ports; compat: 1024).
  // Ports beyond the new limit are closed.
  void SetAbi(Abi abi);
  Abi abi() const;
  uint32_t MaxPorts() const;

  // VMM backend endpoints: a guest reaches one with EVTCHNOP_bind_interdomain(remote_dom=0,
  // remote_port=endpoint). Returns the endpoint number.
  Result<Port> AddBackendEndpoint(Backend* backend);
  // For a restore: `backend` becomes endpoint `endpoint` (free here, else -EEXIST; out of
  // range -EINVAL), unconnected until Restore's port table connects a port to it.
  Result<> AddBackendEndpointAt(Port endpoint, Backend* backend);
  // Allocate a guest port already connected to a backend (like the toolstack does for the
  // console and xenstore rings). Returns the guest port.
  Result<Port> ConnectBackend(Backend* backend);
  // The backend half of Xen's EVTCHNOP_bind_interdomain issued from dom0 toward a port the
  // guest allocated with EVTCHNOP_alloc_unbound(remote_dom=0) (a PV frontend's event channel):
  // the guest port becomes interdomain to dom0 (EVTCHNOP_status says so) and its sends reach
  // `backend`. As in Xen only the binding side is notified, so the guest port is not raised.
  // Errors: port not unbound -EINVAL, unbound for another domain -EINVAL, no endpoint left
  // -ENOSPC. Returns the endpoint number.
  Result<Port> AttachBackend(Port guest_port, Backend* backend);
  // The backend closes its end (Xen's EVTCHNOP_close from dom0): a guest port bound to it goes
  // back to unbound, waiting for dom0, and the endpoint is freed for reuse. When this returns
  // no call of the endpoint's OnGuestSend is running or will start; do not call it from inside
  // that OnGuestSend. Unknown endpoint: -EINVAL.
  Result<> CloseBackend(Port endpoint);

  // ---- EVTCHNOP_* (hypercall arguments already copied out of guest memory) ----
  // calling_vcpu is the Xen vCPU id of the caller (IPIs bind to it).
  Result<> AllocUnbound(evtchn_alloc_unbound& op);
  Result<> BindInterdomain(evtchn_bind_interdomain& op);
  Result<> BindVirq(evtchn_bind_virq& op);
  Result<> BindIpi(evtchn_bind_ipi& op);
  Result<> BindPirq(evtchn_bind_pirq& op);
  Result<> Close(const evtchn_close& op);
  Result<> Send(const evtchn_send& op);
  Result<> Status(evtchn_status& op);
  Result<> BindVcpu(const evtchn_bind_vcpu& op);
  Result<> Unmask(const evtchn_unmask& op);
  Result<> Reset(const evtchn_reset& op);
  // FIFO (xen/common/event_fifo.c). init_control switches the guest to FIFO on its first
  // successful call, carrying pending 2-level events over.
  Result<> InitControl(evtchn_init_control& op);
  Result<> ExpandArray(const evtchn_expand_array& op);
  Result<> SetPriority(const evtchn_set_priority& op);
  // Whether FIFO is in force, and FIFO's whole state as plain values (for snapshots).
  bool FifoEnabled() const;
  FifoSnapshot SaveFifo() const;

  // ---- event sources (any thread, never block) ----
  // Raise a guest port as its peer would: the 2-level delivery path.
  void RaisePort(Port port);
  // VIRQ: per-vCPU VIRQs (TIMER, DEBUG, XENOPROF, XENPMU) go to the port bound on that vCPU;
  // global ones to the port bound on any vCPU. Unbound: dropped. Returns whether bound.
  bool RaiseVirq(uint32_t virq, uint32_t xen_vcpu_id = 0);
  // PIRQ (e.g. from an MSI with vector 0). Unbound: dropped. Returns whether bound.
  bool RaisePirq(uint32_t pirq);

  // ---- vCPU side ----
  // Fold this vCPU's shadow selector into its vcpu_info (OR, then clear exactly those bits)
  // and inject if that raised evtchn_upcall_pending. May block briefly (layout change).
  void SyncVcpu(uint32_t xen_vcpu_id);
  // SCHEDOP_poll: register ports for this vCPU, then whether any is already pending.
  // Ports are validated first (bad port: -EINVAL, nothing registered).
  Result<bool> BeginPoll(uint32_t xen_vcpu_id, std::span<const Port> ports);
  void EndPoll(uint32_t xen_vcpu_id);
  // Whether this vCPU's evtchn_upcall_pending is set (for SCHEDOP_block and re-injection).
  bool UpcallPending(uint32_t xen_vcpu_id);

  // ---- deferred work ----
  // Deliver ports whose fast path found shared_info unmapped, and sync vCPU shadows.
  // Run by the worker thread, or by tests when start_worker is false.
  void RunDeferredWork();

  // ---- snapshots (docs/snapshots.md) ----
  // The whole engine as plain values: mode and ABI, shared_info and each vcpu_info's place,
  // shadow selectors, every open port with its binding, backend endpoints' ports, deferred
  // ports, FIFO state and counters. The bits in guest memory (pending, masks, event words) are
  // saved with guest RAM. The VMM has stopped every event source.
  void Save(snapshot::Encoder& out) const;
  // Replaces the port table with a saved one. For an engine whose vCPUs are added, whose
  // guest memory holds every page the snapshot names and whose backends registered the same
  // endpoints, in the same order (ports the VMM connected beforehand are replaced), before
  // any event source runs. The input is hostile: it is checked whole (vCPUs, ports, peers,
  // endpoints, VIRQ/PIRQ uniqueness, addresses) before the engine changes; -EINVAL if not.
  Result<> Restore(snapshot::Decoder& in);

  PortCounters Counters(Port port) const;
  // Ports with any counter set, for --stats.
  std::vector<std::pair<Port, PortCounters>> AllCounters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xenkvm::evtchn
