// How a port's pending/mask state lives in guest memory: the 2-level port-ops vtable
// (two_level.h, one implementation per layout). FIFO (fifo.h) has its own pages and state and
// is called on its concrete type; both answer a raise with a RaiseOutcome.
//
// Every method is called with a LayoutGuard held on guest memory and with `shared_info` the
// host address of the mapped shared_info page under that guard. Any thread; never blocks.
#pragma once

#include <cstdint>

#include "evtchn/port_table.h"
#include "evtchn/vcpu_state.h"

namespace xenkvm::evtchn {

enum class RaiseOutcome : uint8_t {
  kCoalesced,  // already pending: nothing new
  kMasked,     // newly pending, but masked: no upcall
  kDelivered,  // newly pending and unmasked: selector/upcall path taken
  kShadowed,   // newly pending and unmasked, but vcpu_info was unmapped: the selector bit is
               // in vcpu.shadow_sel and the vCPU must sync
  kRetry,      // FIFO: a page is unmapped right now or a queue stayed busy: defer and replay
  kParked,     // FIFO: the port has no event array page yet; raised when expand_array adds it
  kDropped,    // FIFO: the vCPU has no control block (Xen drops the event)
};

class PortOps {
 public:
  virtual ~PortOps() = default;
  virtual uint32_t MaxPorts() const = 0;
  // Mark `port` pending and, if unmasked, route it to `vcpu` (selector -> upcall_pending ->
  // inject). Where vcpu_info is unmapped, the selector bit lands in vcpu.shadow_sel.
  virtual RaiseOutcome Raise(Port port, VcpuState& vcpu, uint8_t* shared_info) = 0;
  // EVTCHNOP_unmask: clear the mask; if the port is pending, re-raise it on `vcpu`. Returns
  // whether the selector bit went to the shadow (the vCPU must sync).
  virtual bool Unmask(Port port, VcpuState& vcpu, uint8_t* shared_info) = 0;
  virtual void ClearPending(Port port, uint8_t* shared_info) = 0;
  virtual bool IsPending(Port port, uint8_t* shared_info) const = 0;
  virtual bool IsMasked(Port port, uint8_t* shared_info) const = 0;
  // Fold vcpu.shadow_sel into the vcpu_info at `vcpu_info` (OR, then clear exactly those bits);
  // inject if that made evtchn_upcall_pending go 0 -> 1.
  virtual void SyncShadow(VcpuState& vcpu, uint8_t* vcpu_info) = 0;
  // Every selector bit set: the guest rescans all ports (used when vcpu_info moves).
  virtual uint64_t AllSelectorBits() const = 0;
};

}  // namespace xenkvm::evtchn
