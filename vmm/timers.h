// Per-vCPU Xen timers (VCPUOP_set_singleshot_timer, set_timer_op, periodic): one thread sleeps
// until the earliest deadline and calls the expiry callback (which raises VIRQ_TIMER).
// Deadlines are guest-chosen: any uint64_t is accepted without overflow or spinning.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "abi/sync.h"

namespace xenkvm::vmm {

// The longest single wait on a condition variable: wait_for(now + huge) overflows the clock and
// returns at once (a spin). Waiting in slices of at most this re-checks the deadline instead.
constexpr uint64_t kMaxWaitSliceNs = 1'000'000'000;
inline std::chrono::nanoseconds WaitSlice(uint64_t ns) {
  return std::chrono::nanoseconds(static_cast<int64_t>(std::min(ns, kMaxWaitSliceNs)));
}

// Threads: Set() from any thread; the callback runs on the timer thread without mutex_ held.
// Lock: mutex_ guards deadlines_, periods_, paused_ and stop_.
class Timers {
 public:
  using Clock = std::function<uint64_t()>;  // current system time, ns
  using Expire = std::function<void(uint32_t vcpu)>;
  Timers(uint32_t vcpus, Clock now, Expire expire);
  ~Timers();
  // deadline_ns == 0 stops the timer; a deadline in the past fires at once. A periodic timer
  // re-arms at now + period, saturating (a period too long to add never fires again).
  void Set(uint32_t vcpu, uint64_t deadline_ns, uint64_t period_ns);
  // vCPU's timer as (deadline_ns, period_ns), 0 = off (snapshots).
  std::pair<uint64_t, uint64_t> Get(uint32_t vcpu);
  // How many times the callback has run (for tests and --stats).
  uint64_t Expiries();
  // Machine pause: no timer fires until Resume (Pause returns once callbacks in progress are
  // done). Deadlines are absolute system time, which goes
  // on meanwhile (as Xen's does for a paused domain): one that passed fires at Resume.
  void Pause();
  void Resume();

 private:
  void Loop();
  Clock now_;
  Expire expire_;
  Mutex mutex_;
  std::condition_variable cv_;
  std::vector<uint64_t> deadlines_ XENKVM_GUARDED_BY(mutex_);  // 0 = off
  std::vector<uint64_t> periods_ XENKVM_GUARDED_BY(mutex_);
  uint64_t expiries_ XENKVM_GUARDED_BY(mutex_) = 0;
  bool stop_ XENKVM_GUARDED_BY(mutex_) = false;
  bool paused_ XENKVM_GUARDED_BY(mutex_) = false;
  bool firing_ XENKVM_GUARDED_BY(mutex_) = false;  // callbacks running (mutex_ released)
  std::thread thread_;
};

}  // namespace xenkvm::vmm
