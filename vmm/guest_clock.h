// Xen system time for the guest (xen/xen.h struct vcpu_time_info, the pvclock protocol):
// nanoseconds since the VM started, extrapolated by the guest from its TSC with mul/shift.
#pragma once

#include <cstdint>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"

namespace xenkvm::vmm {

// Threads: any. mutex_ guards the rate and every vCPU's line (a vCPU thread moves its own line
// while others read theirs).
//
// Each vCPU has its own pair, as in Xen (which writes a vCPU's vcpu_time_info from the TSC of
// the CPU it is about to run on): the pair published to a vCPU is always a reading of that
// vCPU's own TSC, so the guest never sees a TSC below the pair's (its unsigned delta would wrap
// and its clock jump centuries ahead) even where vCPUs' TSCs differ. The rate is shared.
class GuestClock {
 public:
  explicit GuestClock(uint32_t vcpus = 1);
  // A first reading of `vcpu`'s TSC (KVM_GET_MSRS right before this call), before it runs;
  // `tsc_khz` (KVM_GET_TSC_KHZ or a snapshot's; 0 = keep) sets the shared rate. The guest's
  // TSC is extrapolated from the host's monotonic clock, not from the host TSC: in a nested VM
  // the two TSCs need not tick at the same rate.
  void Calibrate(uint32_t vcpu, uint64_t guest_tsc_now, uint32_t tsc_khz);
  // The rate the guest TSC really ticks at, from two guest TSC reads `interval_ns` apart on the
  // host clock. The kernel's own figure (KVM_GET_TSC_KHZ) can be off: 8% in a nested VM under
  // QEMU TCG, enough to break guests' timers within a second.
  static uint32_t KhzFromSamples(uint64_t tsc0, uint64_t tsc1, uint64_t interval_ns);
  uint64_t MonotonicNs() const;  // the host clock the guest TSC is anchored to

  // What a Sample changed: nothing, this vCPU's pair, or the rate (every vCPU's pair).
  enum class Moved : uint8_t { kNothing, kThisVcpu, kRate };
  // A reading of `vcpu`'s TSC taken by its thread while it is out of KVM_RUN, with `mono_ns`
  // the host clock at that moment (the caller brackets the reading between two clock reads and
  // drops slow ones).
  //
  // Why readings are not taken at face value: where the host kernel deems its TSC unstable
  // (nested VMs), KVM freezes a vCPU's TSC whenever the vCPU is out of KVM_RUN and catches it up
  // to its own line at the next entry. The guest reads its TSC while it runs, on that line; a
  // reading from user space is on it or behind it by however long the thread waited (a pause,
  // a preemption), never ahead. So a vCPU's anchor follows the line from below: its first
  // reading after calibration settles it (KVM may move the TSC when a vCPU first runs), a
  // reading ahead of it moves it forward at once, and once a second the least-behind reading of
  // that second becomes the anchor and re-measures the rate from the last such reading a second
  // or more before (Xen likewise rewrites vcpu_time_info at least every second).
  Moved Sample(uint32_t vcpu, uint64_t guest_tsc, uint64_t mono_ns);
  // The Xen system time the guest computes on `vcpu` for `guest_tsc` from its current pair.
  int64_t GuestSystemNs(uint32_t vcpu, uint64_t guest_tsc) const;
  uint64_t NowNs() const;  // Xen system time
  // A restored guest: system time goes on from `system_ns` (never backwards), the wall clock
  // stays the host's. Before any other thread uses the clock.
  void RestoreSystemTime(uint64_t system_ns);
  uint32_t tsc_khz() const;
  void BootWallclock(uint64_t* sec, uint32_t* nsec) const;
  // `vcpu`'s vcpu_time_info (version left 0 for the writer to set); -ENOSYS if that vCPU's TSC
  // has not been read yet.
  Result<vcpu_time_info> TimeInfo(uint32_t vcpu) const;

 private:
  uint64_t boot_mono_ns_;  // written only before the guest runs (constructor, restore)
  uint64_t boot_real_ns_;
  void SetRateLocked(uint32_t tsc_khz) XENKVM_REQUIRES(mutex_);

  struct Reading {
    uint64_t tsc = 0;      // the guest's TSC
    uint64_t mono_ns = 0;  // host CLOCK_MONOTONIC at that moment
  };
  struct Line {
    Reading anchor;       // the pvclock pair's point
    Reading rate_base;    // where the rate is measured from
    Reading window_best;  // least-behind reading of this second
    bool window_has_best = false;
    uint64_t window_start_ns = 0;
    bool read = false;     // Calibrate or Sample has given it a reading
    bool settled = false;  // a reading after the first entry came
  };
  // The host clock reading `line`'s pvclock maps `guest_tsc` to.
  __int128 GuestViewMonoNsLocked(const Line& line, uint64_t guest_tsc) const
      XENKVM_REQUIRES(mutex_);
  // How far `r` is ahead of `line` at the current rate (negative: behind).
  int64_t AheadNsLocked(const Line& line, const Reading& r) const XENKVM_REQUIRES(mutex_);

  mutable Mutex mutex_;
  std::vector<Line> lines_ XENKVM_GUARDED_BY(mutex_);  // one per vCPU
  uint32_t tsc_khz_ XENKVM_GUARDED_BY(mutex_) = 0;
  uint32_t mul_ XENKVM_GUARDED_BY(mutex_) = 0;
  int8_t shift_ XENKVM_GUARDED_BY(mutex_) = 0;
  bool calibrated_ XENKVM_GUARDED_BY(mutex_) = false;  // a rate is known
};

}  // namespace xenkvm::vmm
