// Xen system time for the guest (xen/xen.h struct vcpu_time_info, the pvclock protocol):
// nanoseconds since the VM started, extrapolated by the guest from its TSC with mul/shift.
#pragma once

#include <cstdint>

#include "abi/result.h"
#include "abi/xen.h"

namespace xenkvm::vmm {

// Threads: Calibrate() once on vCPU0's thread before it first runs; the rest from any thread
// afterwards (immutable then).
class GuestClock {
 public:
  GuestClock();
  // guest_tsc_now: the guest's TSC read (KVM_GET_MSRS) right before this call; tsc_khz its rate.
  void Calibrate(uint64_t guest_tsc_now, uint32_t tsc_khz);
  uint64_t NowNs() const;  // Xen system time
  void BootWallclock(uint64_t* sec, uint32_t* nsec) const;
  // A fresh vcpu_time_info (version left 0 for the writer to set). -ENOSYS if not calibrated.
  Result<vcpu_time_info> TimeInfo() const;

 private:
  uint64_t boot_mono_ns_;
  uint64_t boot_real_ns_;
  int64_t tsc_offset_ = 0;  // guest TSC - host TSC
  uint32_t mul_ = 0;
  int8_t shift_ = 0;
  bool calibrated_ = false;
};

}  // namespace xenkvm::vmm
