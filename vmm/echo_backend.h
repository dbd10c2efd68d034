// A VMM-side interdomain endpoint for tests and the demo: every event the guest sends on the
// connected port is answered with an event on the same port, raised from this backend's own
// I/O thread (so delivery runs concurrently with the guest, as a real backend's would).
#pragma once

#include <condition_variable>
#include <deque>
#include <thread>

#include "abi/sync.h"
#include "evtchn/engine.h"

namespace xenkvm::vmm {

// Threads: OnGuestSend on the sending vCPU's thread; answers on thread_.
// Lock: mutex_ guards queue_ and stop_.
class EchoBackend : public evtchn::Backend {
 public:
  explicit EchoBackend(evtchn::Engine& engine);
  ~EchoBackend() override;
  void OnGuestSend(evtchn::Port guest_port) override;

 private:
  void Loop();
  evtchn::Engine& engine_;
  Mutex mutex_;
  std::condition_variable cv_;
  std::deque<evtchn::Port> queue_ XENKVM_GUARDED_BY(mutex_);
  bool stop_ XENKVM_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

}  // namespace xenkvm::vmm
