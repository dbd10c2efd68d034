// The xenstore ring backend (xen/include/public/io/xs_wire.h struct xenstore_domain_interface,
// docs/misc/xenstore-ring.txt): moves request bytes from the guest's page into a
// xenstore::WireConnection and its replies and watch events back, as xenstored's domain
// connection does. Hostile indexes (a producer/consumer distance beyond the ring) and a header
// announcing more than XENSTORE_PAYLOAD_MAX are connection errors: the error field is set and
// the connection stops until the guest asks for a reconnection. The guest is notified only when
// bytes moved (or a reconnection finished).
//
// Threads: OnGuestSend on the sending vCPU's thread; watch events arrive from whichever thread
// changed the store; Pump may run on any. Lock: mutex_ guards the ring and wire_'s input side;
// whoever finds it taken leaves the work to its holder (pending_), so no thread ever waits here.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "abi/sync.h"
#include "evtchn/sink.h"
#include "mem/guest_memory.h"
#include "snapshot/codec.h"
#include "xenstore/store.h"
#include "xenstore/wire.h"

namespace xenkvm::backends {

class XenstoreRing : public evtchn::Backend {
 public:
  using Notify = std::function<void()>;  // raise the guest's xenstore port

  struct Counters {
    uint64_t requests_bytes = 0;
    uint64_t reply_bytes = 0;
    uint64_t notifies = 0;
    uint64_t errors = 0;  // connection errors (bad index, oversized message)
    uint64_t reconnections = 0;
  };

  // Writes the page's server_features (reconnection, error reporting) and zeroes its state.
  XenstoreRing(mem::GuestMemory& memory, uint64_t ring_gpa, xenstore::Store& store,
               xenstore::DomId domid, Notify notify = {},
               xenstore::WireConnection::Limits limits = {});
  ~XenstoreRing() override;
  // Set before the guest can send (the port is known only after the engine connected us).
  void SetNotify(Notify notify);
  // Zeroes the page and advertises server_features again: for a VMM that placed the page
  // (which zeroes it) after constructing the ring. Before the guest runs.
  void ResetPage();

  void OnGuestSend(evtchn::Port) override { Pump(); }
  // Moves whatever can move in both directions; never blocks on another thread.
  void Pump();

  Counters counters();

  // Snapshots (docs/snapshots.md, ring_snapshot.cc): whether the connection stopped on an
  // error, the counters, and the wire's half-read request and queued output. The page itself
  // (indexes, bytes in flight) travels with guest memory. Restore checks everything first
  // (-EINVAL naming what is wrong); call Pump once the guest may run again.
  void Save(snapshot::Encoder& out);
  Result<> Restore(snapshot::Decoder& in);

 private:
  // One pass over the ring; returns whether bytes moved.
  bool ServiceLocked(bool& notify) XENKVM_REQUIRES(mutex_);
  void FailLocked(uint32_t error) XENKVM_REQUIRES(mutex_);

  mem::GuestMemory& memory_;
  const uint64_t ring_gpa_;
  Mutex mutex_;
  Notify notify_ XENKVM_GUARDED_BY(mutex_);
  Counters counters_ XENKVM_GUARDED_BY(mutex_);
  bool failed_ XENKVM_GUARDED_BY(mutex_) = false;
  std::atomic<bool> pending_{false};
  std::unique_ptr<xenstore::WireConnection> wire_;  // last: its callback uses the above
};

}  // namespace xenkvm::backends
