// Xen system time for the guest (xen/xen.h struct vcpu_time_info, the pvclock protocol):
// nanoseconds since the VM started, extrapolated by the guest from its TSC with mul/shift.
#pragma once

#include <cstdint>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"

namespace xenkvm::vmm {

// Threads: any. mutex_ guards the anchor (a vCPU thread re-anchors it while others read it).
class GuestClock {
 public:
  GuestClock();
  // guest_tsc_now: the guest's TSC read (KVM_GET_MSRS) right before this call; tsc_khz its rate.
  // The guest's TSC is extrapolated from the host's monotonic clock, not from the host TSC: in
  // a nested VM the two TSCs need not tick at the same rate.
  void Calibrate(uint64_t guest_tsc_now, uint32_t tsc_khz);
  // The rate the guest TSC really ticks at, from two guest TSC reads `interval_ns` apart on the
  // host clock. The kernel's own figure (KVM_GET_TSC_KHZ) can be off: 8% in a nested VM under
  // QEMU TCG, enough to break guests' timers within a second.
  static uint32_t KhzFromSamples(uint64_t tsc0, uint64_t tsc1, uint64_t interval_ns);
  uint64_t MonotonicNs() const;  // the host clock the guest TSC is anchored to
  // A fresh guest TSC reading (taken by a vCPU thread while its vCPU is out of KVM_RUN) moves
  // the anchor there, and re-measures the rate from the previous anchor once it is old enough.
  // KVM may adjust the guest's TSC offset when it first runs a vCPU or moves it between host
  // CPUs (unstable host TSC, seen in nested VMs): Xen likewise refreshes vcpu_time_info.
  // `mono_ns` is MonotonicNs() at the moment of the reading (the caller brackets the reading
  // between two clock reads and drops slow ones: a reading paired with a later clock would make
  // the guest's time jump).
  void Reanchor(uint64_t guest_tsc_now, uint64_t mono_ns);
  uint64_t NowNs() const;  // Xen system time
  // A restored guest: system time goes on from `system_ns` (never backwards), the wall clock
  // stays the host's. Before any other thread uses the clock.
  void RestoreSystemTime(uint64_t system_ns);
  uint32_t tsc_khz() const;
  void BootWallclock(uint64_t* sec, uint32_t* nsec) const;
  // A fresh vcpu_time_info (version left 0 for the writer to set). -ENOSYS if not calibrated.
  Result<vcpu_time_info> TimeInfo() const;

 private:
  uint64_t boot_mono_ns_;  // written only before the guest runs (constructor, restore)
  uint64_t boot_real_ns_;
  void SetRateLocked(uint32_t tsc_khz) XENKVM_REQUIRES(mutex_);

  mutable Mutex mutex_;
  uint64_t anchor_tsc_ XENKVM_GUARDED_BY(mutex_) = 0;      // guest TSC at anchor_mono_ns_
  uint64_t anchor_mono_ns_ XENKVM_GUARDED_BY(mutex_) = 0;  // host CLOCK_MONOTONIC then
  uint32_t tsc_khz_ XENKVM_GUARDED_BY(mutex_) = 0;
  uint32_t mul_ XENKVM_GUARDED_BY(mutex_) = 0;
  int8_t shift_ XENKVM_GUARDED_BY(mutex_) = 0;
  bool calibrated_ XENKVM_GUARDED_BY(mutex_) = false;
};

}  // namespace xenkvm::vmm
