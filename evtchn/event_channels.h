// The event channels of one domain: its port table (port_table.h) and delivery (delivery.h),
// with the operations on them as members — the EVTCHNOP_* of xen/common/event_channel.c and
// event_fifo.c (event_channels.cc, event_channels_fifo.cc) and the VMM's setup calls. Engine
// (engine.h) is the public facade over this class; its comments are the contracts.
//
// Locks, in the order they are taken:
//   PortTable::mutex -> Delivery's deferred_mutex_ -> FifoQueue::lock -> PortCounterShards'
//   mutex -> GuestMemory LayoutGuard -> CachedMapping update mutex.
// PortTable::mutex is held by every EVTCHNOP_* and setup call; senders (Raise*, Send) take no
// mutex (delivery.h). FIFO queue locks are only try-locked on the delivery path (fifo.h).
#pragma once

#include <cstdint>
#include <span>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "evtchn/delivery.h"
#include "evtchn/engine.h"
#include "evtchn/port_table.h"

namespace xenkvm::evtchn {

class EventChannels {
 public:
  EventChannels(mem::GuestMemory& memory, uint16_t domid);
  EventChannels(const EventChannels&) = delete;
  EventChannels& operator=(const EventChannels&) = delete;

  PortTable& ports() { return ports_; }
  const PortTable& ports() const { return ports_; }
  Delivery& delivery() { return delivery_; }
  const Delivery& delivery() const { return delivery_; }

  // ---- setup by the VMM (engine.h says what each does) ----
  Result<> AddVcpu(uint32_t xen_vcpu_id, VcpuSink* sink);
  Result<> SetVcpuInfoGpa(uint32_t xen_vcpu_id, uint64_t gpa);
  Result<> SetSharedInfoGpa(uint64_t gpa, std::span<const uint32_t> default_slot_vcpus);
  void SetAbi(Abi abi);
  Abi abi() const;
  Result<Port> AddBackendEndpoint(Backend* backend);
  Result<> AddBackendEndpointAt(Port endpoint, Backend* backend);
  Result<Port> ConnectBackend(Backend* backend);
  Result<Port> AttachBackend(Port guest_port, Backend* backend);
  Result<> CloseBackend(Port endpoint);

  // ---- EVTCHNOP_* ----
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
  Result<> InitControl(evtchn_init_control& op);
  Result<> ExpandArray(const evtchn_expand_array& op);
  Result<> SetPriority(const evtchn_set_priority& op);
  FifoSnapshot SaveFifo() const;

  // ---- snapshots (engine_snapshot.cc; Engine::Save / Restore have the contracts) ----
  void Save(snapshot::Encoder& out) const;
  Result<> Restore(snapshot::Decoder& in);

  // ---- vCPU side ----
  void SyncVcpu(uint32_t xen_vcpu_id);
  Result<bool> BeginPoll(uint32_t xen_vcpu_id, std::span<const Port> ports);
  void EndPoll(uint32_t xen_vcpu_id);
  bool UpcallPending(uint32_t xen_vcpu_id);

 private:
  // A free port, its counters restarted.
  Result<Port> AllocateLocked() XENKVM_REQUIRES(ports_.mutex);
  // The 0 or -errno Xen gives for a domain id naming this guest (DOMID_SELF or its own id):
  // other existing domains (the VMM's, id 0) may not be acted on, the rest don't exist.
  Result<> CheckSelf(domid_t dom) const;
  // Closing follows Xen's __evtchn_close. Xen's senders hold the channel lock, so once a close
  // returns no send is still setting the port's pending bit; ours take no lock, so the close
  // waits for deliveries in flight (they hold a LayoutGuard) before clearing pending.
  Result<> CloseLocked(Port port) XENKVM_REQUIRES(ports_.mutex);
  void CloseAllLocked(std::span<const Port> ports) XENKVM_REQUIRES(ports_.mutex);
  Delivery::Mode TwoLevelModeLocked() const XENKVM_REQUIRES(ports_.mutex) {
    return abi_ == Abi::k64 ? Delivery::Mode::kTwoLevel64 : Delivery::Mode::kTwoLevelCompat;
  }
  // Switch delivery mechanism; ports beyond the new limit are closed first.
  void SetModeLocked(Delivery::Mode mode) XENKVM_REQUIRES(ports_.mutex);
  // Copies a guest range (a moving shared_info or vcpu_info keeps its contents, as in Xen where
  // the page itself moves). LayoutGuard held.
  void CopyGuestLocked(uint64_t from, uint64_t to, uint64_t length) XENKVM_REQUIRES(ports_.mutex);

  // FIFO switching (event_channels_fifo.cc).
  Result<uint64_t> FifoPageLocked(uint64_t gfn) XENKVM_REQUIRES(ports_.mutex);
  void EnterFifoLocked() XENKVM_REQUIRES(ports_.mutex);
  void LeaveFifoLocked() XENKVM_REQUIRES(ports_.mutex);

  mem::GuestMemory& memory_;
  const uint16_t domid_;
  PortTable ports_;
  Delivery delivery_{memory_, ports_};
  Abi abi_ XENKVM_GUARDED_BY(ports_.mutex) = Abi::k64;
};

}  // namespace xenkvm::evtchn
