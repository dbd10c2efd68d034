// A VMM-side interdomain endpoint for tests and the demo: every event the guest sends on the
// connected port is answered with an event on the same port, raised from this backend's own
// I/O thread (so delivery runs concurrently with the guest, as a real backend's would).
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <thread>

#include "abi/sync.h"
#include "evtchn/engine.h"

namespace xenkvm::vmm {

// The queue holds at most max_queued ports: a guest sending faster than the answers go out
// gets its extra sends coalesced (an event channel is a pending bit, so a dropped duplicate
// loses nothing; a new port beyond the bound is counted in dropped()).
// Threads: OnGuestSend on the sending vCPU's thread; answers on thread_.
// Lock: mutex_ guards queue_, dropped_ and stop_.
class EchoBackend : public evtchn::Backend {
 public:
  explicit EchoBackend(evtchn::Engine& engine, size_t max_queued = 1024);
  ~EchoBackend() override;
  void OnGuestSend(evtchn::Port guest_port) override;
  uint64_t dropped();

 private:
  void Loop();
  evtchn::Engine& engine_;
  Mutex mutex_;
  std::condition_variable cv_;
  const size_t max_queued_;
  std::deque<evtchn::Port> queue_ XENKVM_GUARDED_BY(mutex_);
  uint64_t dropped_ XENKVM_GUARDED_BY(mutex_) = 0;
  bool stop_ XENKVM_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

}  // namespace xenkvm::vmm
