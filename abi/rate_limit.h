// A token-bucket rate limiter for output a guest can trigger (unknown hypercall logs, console
// warnings): at most `burst` messages at once, refilled at `per_second`; what is dropped is
// counted so the next allowed message can say how many were suppressed. Constant memory.
#pragma once

#include <chrono>
#include <cstdint>

#include "abi/sync.h"

namespace xenkvm {

// Threads: any. Lock: mutex_ guards the bucket.
class RateLimiter {
 public:
  using Clock = uint64_t (*)();  // monotonic nanoseconds
  static uint64_t MonotonicNs() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
  }

  // per_second == 0 allows nothing (logging off).
  explicit RateLimiter(uint32_t per_second, uint32_t burst = 10, Clock clock = &MonotonicNs)
      : per_second_(per_second),
        burst_(burst == 0 ? 1 : burst),
        clock_(clock),
        tokens_(burst_),
        last_ns_(clock()) {}

  // True if one more message may go out now. *suppressed gets the number dropped since the last
  // allowed one (then resets).
  bool Allow(uint64_t* suppressed = nullptr) {
    MutexLock lock(mutex_);
    const uint64_t now = clock_();
    if (per_second_ != 0 && now > last_ns_) {
      // Whole tokens earned since last_ns_; keep the remainder by advancing last_ns_ exactly.
      const uint64_t ns_per_token = 1'000'000'000ull / per_second_ + 1;
      const uint64_t earned = (now - last_ns_) / ns_per_token;
      if (earned > 0) {
        tokens_ = earned >= burst_ - tokens_ ? burst_ : tokens_ + static_cast<uint32_t>(earned);
        last_ns_ = tokens_ == burst_ ? now : last_ns_ + earned * ns_per_token;
      }
    }
    if (per_second_ == 0 || tokens_ == 0) {
      ++suppressed_;
      return false;
    }
    --tokens_;
    if (suppressed != nullptr) *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  const uint32_t per_second_;
  const uint32_t burst_;
  const Clock clock_;
  Mutex mutex_;
  uint32_t tokens_ XENKVM_GUARDED_BY(mutex_);
  uint64_t last_ns_ XENKVM_GUARDED_BY(mutex_);
  uint64_t suppressed_ XENKVM_GUARDED_BY(mutex_) = 0;
};

}  // namespace xenkvm
