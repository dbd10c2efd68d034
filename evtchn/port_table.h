// The port table's building blocks: a port's state, its binding packed into one atomic word
// (what delivery reads without the table lock), and buckets of ports allocated on demand so a
// table can grow to FIFO's 2^17 ports without paying for them up front.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "abi/xen.h"

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

}  // namespace xenkvm::evtchn
