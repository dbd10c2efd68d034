// The PV console backend (xen/include/public/io/console.h, struct xencons_interface), as
// xenconsoled serves a domain's ring: guest output (out[]) is drained to a sink, host input is
// queued and copied into in[] as the guest frees space. The guest is notified only when the
// backend moved data: Mini-OS notifies back on every event, so a backend that notified without
// moving data would loop forever with it.
//
// Threads: OnGuestSend on the sending vCPU's thread; Input and Service from any thread.
// Lock: mutex_ guards the pending input and all ring access; the sink runs under it (output
// stays in order), notify after it is released (the guest may answer at once).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <span>

#include "abi/sync.h"
#include "evtchn/sink.h"
#include "mem/guest_memory.h"
#include "snapshot/codec.h"

namespace xenkvm::backends {

class ConsoleRing : public evtchn::Backend {
 public:
  using Sink = std::function<void(std::span<const char>)>;  // must not call back into the ring
  using Notify = std::function<void()>;                     // raise the guest's console port
  static constexpr size_t kMaxPendingInput = 64 * 1024;

  struct Counters {
    uint64_t out_bytes = 0;
    uint64_t in_bytes = 0;
    uint64_t notifies = 0;
    uint64_t bad_indexes = 0;  // a guest index beyond one ring's distance
  };

  ConsoleRing(mem::GuestMemory& memory, uint64_t ring_gpa, Sink sink, Notify notify = {});
  // Set before the guest can send (the port is known only after the engine connected us).
  void SetNotify(Notify notify);

  void OnGuestSend(evtchn::Port) override { Service(); }

  // Queues host input (stdin) for the guest; returns how many bytes were taken (fewer once
  // kMaxPendingInput are waiting: the caller stops reading its source until Service drains).
  size_t Input(std::span<const char> bytes);
  // Drains the output ring and fills the input ring; notifies the guest iff a byte moved.
  // Returns whether one did.
  bool Service();

  size_t PendingInput();
  Counters counters();

  // Snapshots (docs/snapshots.md, ring_snapshot.cc): the host input not yet in the ring and
  // the counters; the ring's indexes and bytes travel with guest memory. Restore puts the saved
  // input ahead of any taken since (-EINVAL for a hostile section, nothing changed); call
  // Service once the guest may run again.
  void Save(snapshot::Encoder& out);
  Result<> Restore(snapshot::Decoder& in);

 private:
  // One pass in both directions; returns whether a byte moved (the caller then notifies).
  bool ServiceLocked() XENKVM_REQUIRES(mutex_);

  mem::GuestMemory& memory_;
  const uint64_t ring_gpa_;
  const Sink sink_;
  Mutex mutex_;
  Notify notify_ XENKVM_GUARDED_BY(mutex_);
  std::deque<char> input_ XENKVM_GUARDED_BY(mutex_);
  Counters counters_ XENKVM_GUARDED_BY(mutex_);
};

}  // namespace xenkvm::backends
