// The port table of one domain (the state of xen/common/event_channel.c: ports and what each is
// bound to, vCPUs, VIRQ and PIRQ bindings, VMM backend endpoints): a port's state, its binding
// packed into one atomic word (what delivery reads without the table lock), buckets of ports
// allocated on demand so a table can grow to FIFO's 2^17 ports without paying for them up front,
// and PortTable, which owns them all. The EVTCHNOP_* ops (event_channels.h) change it under its
// mutex; delivery (delivery.h) only reads it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "evtchn/vcpu_state.h"

namespace xenkvm::evtchn {

using Port = uint32_t;

enum class PortState : uint8_t {
  kFree = 0,
  kReserved,     // port 0
  kUnbound,      // waiting for remote_domid to bind_interdomain to it
  kInterdomain,  // loopback: connected to another port of this guest (peer)
  kBackend,      // interdomain to a VMM backend endpoint (peer = endpoint number)
  kVirq,
  kIpi,
  kPirq,
};

// Whether an event raised on a port in this state goes anywhere.
constexpr bool IsDeliverable(PortState s) {
  return s == PortState::kInterdomain || s == PortState::kBackend || s == PortState::kVirq ||
         s == PortState::kIpi || s == PortState::kPirq;
}

// What senders need, in one word so they never see a half-updated binding.
struct Binding {
  PortState state = PortState::kFree;
  uint16_t vcpu = 0;  // Xen vCPU id the event is delivered to (Xen's notify_vcpu_id)
  uint32_t peer = 0;  // kInterdomain: the other local port; kBackend: the endpoint number

  uint64_t Pack() const { return uint64_t(state) | uint64_t(vcpu) << 8 | uint64_t(peer) << 32; }
  static Binding Unpack(uint64_t word) {
    return Binding{PortState(word & 0xff), uint16_t(word >> 8), uint32_t(word >> 32)};
  }
};

// Lock: `binding` is written under the engine's table mutex and read by senders with acquire
// loads; remote_domid/source are table-mutex only; priority/fifo_last_queue as fifo.h says.
// Counters live apart, in PortCounterShards (port_counters.h).
struct PortEntry {
  std::atomic<uint64_t> binding{0};
  uint16_t remote_domid = 0;  // kUnbound: who may connect; kInterdomain: the remote domain
  uint32_t source = 0;        // kVirq: VIRQ number; kPirq: PIRQ number
  // FIFO (fifo.h): the port's priority, and the queue it was last linked on (Xen's
  // fifo_lastq: vCPU id << 8 | priority), so a move finds the old queue's lock.
  std::atomic<uint8_t> priority{EVTCHN_FIFO_PRIORITY_DEFAULT};
  std::atomic<uint32_t> fifo_last_queue{0};
};

inline constexpr uint32_t kPortsPerBucket = 64;
struct PortBucket {
  std::array<PortEntry, kPortsPerBucket> ports;
};
inline constexpr uint32_t kMaxBuckets = abi::kFifoPorts / kPortsPerBucket;

inline constexpr uint32_t kMaxVcpus = 128;     // Xen's HVM_MAX_VCPUS
inline constexpr uint32_t kMaxPirqs = 1024;    // PIRQs a guest may bind
inline constexpr uint32_t kMaxEndpoints = 64;  // VMM backend endpoints

inline bool VirqIsPerVcpu(uint32_t virq) {
  return virq == VIRQ_TIMER || virq == VIRQ_DEBUG || virq == VIRQ_XENOPROF || virq == VIRQ_XENPMU;
}

class Backend;  // evtchn/sink.h

// Lock: `mutex` guards the table's shape (buckets, vCPUs, endpoints, the free hint, the port
// limit's changes) and is held by every EVTCHNOP_*; it comes first in the engine's lock order
// (event_channels.h). Lookups take no lock: the bucket and vCPU pointer arrays, bindings, VIRQ
// and PIRQ ports and the port limit are atomics, published with release stores under `mutex`;
// buckets and vCPUs are never freed before the table.
class PortTable {
 public:
  PortTable();
  PortTable(const PortTable&) = delete;
  PortTable& operator=(const PortTable&) = delete;

  // Public so that functions elsewhere can name it in XENKVM_REQUIRES.
  mutable Mutex mutex;

  // ---- lookups (any thread, never block) ----
  PortEntry* Find(Port port) const {
    if (port >= max_ports_.load(std::memory_order_acquire)) return nullptr;
    PortBucket* bucket = buckets_[port / kPortsPerBucket].load(std::memory_order_acquire);
    return bucket ? &bucket->ports[port % kPortsPerBucket] : nullptr;
  }
  VcpuState* FindVcpu(uint32_t xen_vcpu_id) const {
    if (xen_vcpu_id >= kMaxVcpus) return nullptr;
    return vcpus_[xen_vcpu_id].load(std::memory_order_acquire);
  }
  template <class F>
  void ForEachVcpu(F&& f) const {
    for (const auto& slot : vcpus_)
      if (VcpuState* vcpu = slot.load(std::memory_order_acquire)) f(*vcpu);
  }
  // Ports usable in the delivery mode in force.
  uint32_t max_ports() const { return max_ports_.load(std::memory_order_acquire); }
  static Binding BindingOf(const PortEntry& entry) {
    return Binding::Unpack(entry.binding.load(std::memory_order_acquire));
  }
  // The port bound to a VIRQ (per-vCPU VIRQs on their vCPU, global ones on vCPU 0) or a PIRQ;
  // 0 if none.
  Port VirqPort(uint32_t virq, uint32_t xen_vcpu_id) const;
  Port PirqPort(uint32_t pirq) const {
    return pirq < kMaxPirqs ? pirq_ports_[pirq].load(std::memory_order_acquire) : 0;
  }
  // The backend of an endpoint for one send; CloseBackendLocked waits until it is released.
  Backend* AcquireBackend(Port endpoint);
  void ReleaseBackend(Port endpoint);

  // ---- changes (mutex held) ----
  Result<VcpuState*> AddVcpuLocked(uint32_t xen_vcpu_id, VcpuSink* sink) XENKVM_REQUIRES(mutex);
  // Lowest free port, as Xen allocates them (guests rely on stable numbers), skipping ports
  // for which `busy(port)` says the guest still holds them (Xen's get_free_port skips a port
  // still on a FIFO queue). The port stays free until the caller publishes a binding, so a
  // bind that fails later leaks nothing.
  template <class Busy>
  Result<Port> AllocateLocked(Busy&& busy) XENKVM_REQUIRES(mutex) {
    const uint32_t limit = max_ports_.load(std::memory_order_relaxed);
    for (Port port = lowest_free_hint_; port < limit; ++port) {
      PortEntry& entry = EnsureBucketLocked(port / kPortsPerBucket).ports[port % kPortsPerBucket];
      if (BindingOf(entry).state != PortState::kFree || busy(port)) continue;
      lowest_free_hint_ = port;
      entry.remote_domid = 0;
      entry.source = 0;
      entry.priority.store(EVTCHN_FIFO_PRIORITY_DEFAULT, std::memory_order_relaxed);
      return port;
    }
    return Fail(XEN_ENOSPC, "no free event channel port");
  }
  static void Publish(PortEntry& entry, Binding binding) {
    entry.binding.store(binding.Pack(), std::memory_order_release);
  }
  // Record a VIRQ or PIRQ binding made by the caller (the port is published as kVirq/kPirq).
  void SetVirqPortLocked(VcpuState& vcpu, uint32_t virq, Port port) XENKVM_REQUIRES(mutex);
  void SetPirqPortLocked(uint32_t pirq, Port port) XENKVM_REQUIRES(mutex);
  // The state half of a close (Xen's __evtchn_close): unhook the port from its source, send
  // an interdomain peer back to unbound, and mark the port free. Pending bits are delivery's.
  Result<> UnbindLocked(Port port, uint16_t domid) XENKVM_REQUIRES(mutex);
  // Every port in [first, end) that is open.
  std::vector<Port> OpenPortsLocked(Port first, Port end) const XENKVM_REQUIRES(mutex);
  // A new port limit (the delivery mode changed); the caller closed the ports beyond it.
  void SetMaxPortsLocked(uint32_t max_ports) XENKVM_REQUIRES(mutex);
  // The entry of `port` (< the port limit), its bucket made if needed.
  PortEntry& EntryLocked(Port port) XENKVM_REQUIRES(mutex) {
    return EnsureBucketLocked(port / kPortsPerBucket).ports[port % kPortsPerBucket];
  }
  // Every port free (port 0 reserved), no VIRQ/PIRQ/endpoint bound to one: a snapshot's table
  // is about to be restored over it. Endpoints stay registered.
  void ClearLocked() XENKVM_REQUIRES(mutex);
  template <class F>
  void ForEachEntryLocked(F&& f) XENKVM_REQUIRES(mutex) {
    for (auto& bucket : bucket_storage_)
      for (PortEntry& entry : bucket->ports) f(entry);
  }

  // ---- VMM backend endpoints (mutex held); numbers start at 1 ----
  // A free endpoint slot (reusing closed ones) for `backend`.
  Result<Port> AddEndpointLocked(Backend* backend) XENKVM_REQUIRES(mutex);
  // The same at a given (free) endpoint number: a restored backend takes back its number.
  Result<> AddEndpointAtLocked(Port endpoint, Backend* backend) XENKVM_REQUIRES(mutex);
  // Whether `endpoint` is in use and waiting for a guest port.
  bool EndpointUnboundLocked(Port endpoint) const XENKVM_REQUIRES(mutex);
  bool EndpointInUseLocked(Port endpoint) const XENKVM_REQUIRES(mutex);
  Port EndpointGuestPortLocked(Port endpoint) const XENKVM_REQUIRES(mutex);
  void ConnectEndpointLocked(Port endpoint, Port guest_port) XENKVM_REQUIRES(mutex);
  // Frees the endpoint once no send is inside its backend any more.
  void CloseEndpointLocked(Port endpoint) XENKVM_REQUIRES(mutex);

 private:
  struct Endpoint {
    std::atomic<Backend*> backend{nullptr};
    std::atomic<uint32_t> senders{0};  // sends inside OnGuestSend now (CloseEndpoint waits)
    Port guest_port = 0;               // mutex; 0 while unconnected
    bool in_use = false;               // mutex; false: free for AddEndpointLocked
  };

  PortBucket& EnsureBucketLocked(uint32_t index) XENKVM_REQUIRES(mutex);

  std::array<std::atomic<PortBucket*>, kMaxBuckets> buckets_{};
  std::vector<std::unique_ptr<PortBucket>> bucket_storage_ XENKVM_GUARDED_BY(mutex);
  Port lowest_free_hint_ XENKVM_GUARDED_BY(mutex) = 1;
  std::atomic<uint32_t> max_ports_{abi::Layout64::kPorts};
  std::array<std::atomic<VcpuState*>, kMaxVcpus> vcpus_{};
  std::vector<std::unique_ptr<VcpuState>> vcpu_storage_ XENKVM_GUARDED_BY(mutex);
  std::array<std::atomic<Port>, kMaxPirqs> pirq_ports_{};
  std::array<Endpoint, kMaxEndpoints> endpoints_{};
  uint32_t endpoint_count_ XENKVM_GUARDED_BY(mutex) = 0;
};

}  // namespace xenkvm::evtchn
