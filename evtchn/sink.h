// The engine's two outward interfaces, implemented by the VMM: how an event reaches a vCPU,
// and the VMM-side end of an interdomain channel.
#pragma once

#include <cstdint>

namespace xenkvm::evtchn {

using Port = uint32_t;

// How events reach one vCPU. Implemented by the VMM; every method may be called from any
// thread (including the engine's worker), possibly with engine locks held: it must not block
// and must not call back into the Engine.
class VcpuSink {
 public:
  virtual ~VcpuSink() = default;
  // evtchn_upcall_pending went 0 -> 1 on this vCPU: inject the upcall.
  virtual void InjectUpcall() = 0;
  // This vCPU's vcpu_info was not mapped when an event arrived: call Engine::SyncVcpu for it
  // before it next enters the guest (a path that may block).
  virtual void RequestSync() = 0;
  // A port this vCPU polls (SCHEDOP_poll) became pending, masked or not: wake it.
  virtual void WakePoller() = 0;
};

// A VMM-side end of an interdomain channel (console, xenstore, a test echo service).
class Backend {
 public:
  virtual ~Backend() = default;
  // The guest sent on the port connected to this backend. Called on the sending vCPU's thread
  // without engine locks held; may call Engine::RaisePort.
  virtual void OnGuestSend(Port guest_port) = 0;
};

}  // namespace xenkvm::evtchn
