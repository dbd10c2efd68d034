// The engine's view of one vCPU: where its vcpu_info is, the shadow of evtchn_pending_sel used
// while that page is unmapped, its poll registration and its VIRQ bindings.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "abi/xen.h"
#include "mem/page_cache.h"

namespace xenkvm::evtchn {

class VcpuSink;  // evtchn/sink.h

// Lock: created once under the engine's table mutex and never destroyed before the engine.
// vcpu_info / shadow_sel / poll_port / virq_ports are atomics touched by any thread.
struct VcpuState {
  VcpuState(uint32_t id, VcpuSink* s) : xen_id(id), sink(s) {}

  const uint32_t xen_id;
  VcpuSink* const sink;
  mem::CachedMapping vcpu_info{64};
  // Selector bits raised while vcpu_info was unmapped; folded in by Engine::SyncVcpu.
  std::atomic<uint64_t> shadow_sel{0};
  // SCHEDOP_poll: -1 not polling, 0 any port, else the single polled port (as Xen does).
  std::atomic<int64_t> poll_port{-1};
  // VIRQ -> port. Per-vCPU VIRQs live on their vCPU; global ones on vCPU 0 (as in Xen).
  std::array<std::atomic<uint32_t>, NR_VIRQS> virq_ports{};
};

}  // namespace xenkvm::evtchn
