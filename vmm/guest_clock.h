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
  // A guest TSC reading taken by a vCPU thread while its vCPU is out of KVM_RUN, with `mono_ns`
  // the host clock at that moment (the caller brackets the reading between two clock reads and
  // drops slow ones). Returns true when the pvclock pair moved: every vCPU's vcpu_time_info must
  // then be rewritten.
  //
  // Why readings are not taken at face value: where the host kernel deems its TSC unstable
  // (nested VMs), KVM freezes a vCPU's TSC whenever the vCPU is out of KVM_RUN and catches it up
  // to its own line at the next entry. The guest reads its TSC while it runs, on that line; a
  // reading from user space is on it or behind it by however long the thread waited (a pause,
  // a preemption), never ahead. So the anchor follows the line from below: the first reading
  // after calibration settles it (KVM moves the TSC when a vCPU first runs), a reading ahead of
  // it moves it forward at once, and once a second the least-behind reading of that second
  // becomes the anchor and re-measures the rate from the last such reading a second or more
  // before (Xen likewise rewrites vcpu_time_info at least every second).
  bool Sample(uint64_t guest_tsc, uint64_t mono_ns);
  // The Xen system time the guest computes for `guest_tsc` from the current pair.
  int64_t GuestSystemNs(uint64_t guest_tsc) const;
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

  struct Reading {
    uint64_t tsc = 0;      // the guest's TSC
    uint64_t mono_ns = 0;  // host CLOCK_MONOTONIC at that moment
  };
  // The host clock reading the guest's pvclock maps `guest_tsc` to.
  __int128 GuestViewMonoNsLocked(uint64_t guest_tsc) const XENKVM_REQUIRES(mutex_);
  // How far `r` is ahead of the line through the anchor at the current rate (negative: behind).
  int64_t AheadNsLocked(const Reading& r) const XENKVM_REQUIRES(mutex_);

  mutable Mutex mutex_;
  Reading anchor_ XENKVM_GUARDED_BY(mutex_);       // the pvclock pair's point
  Reading rate_base_ XENKVM_GUARDED_BY(mutex_);    // where the rate is measured from
  Reading window_best_ XENKVM_GUARDED_BY(mutex_);  // least-behind reading of this second
  bool window_has_best_ XENKVM_GUARDED_BY(mutex_) = false;
  uint64_t window_start_ns_ XENKVM_GUARDED_BY(mutex_) = 0;
  bool settled_ XENKVM_GUARDED_BY(mutex_) = false;  // a reading after the first entry came
  uint32_t tsc_khz_ XENKVM_GUARDED_BY(mutex_) = 0;
  uint32_t mul_ XENKVM_GUARDED_BY(mutex_) = 0;
  int8_t shift_ XENKVM_GUARDED_BY(mutex_) = 0;
  bool calibrated_ XENKVM_GUARDED_BY(mutex_) = false;
};

}  // namespace xenkvm::vmm
