// Guest system time and pvclock parameters; see guest_clock.h.
#include "vmm/guest_clock.h"

#include <time.h>
#include <x86intrin.h>

namespace xenkvm::vmm {

namespace {
uint64_t ClockNs(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

GuestClock::GuestClock() : boot_mono_ns_(ClockNs(CLOCK_MONOTONIC)), boot_real_ns_(ClockNs(CLOCK_REALTIME)) {}

void GuestClock::Calibrate(uint64_t guest_tsc_now, uint32_t tsc_khz) {
  // The guest TSC runs at the host rate (no scaling configured), offset by a constant.
  tsc_offset_ = static_cast<int64_t>(guest_tsc_now - __rdtsc());
  // ns = ((tsc_delta << shift) * mul) >> 32, with mul < 2^32.
  uint64_t mul = (1'000'000ull << 32) / (tsc_khz == 0 ? 1 : tsc_khz);
  int shift = 0;
  while (mul >= (1ull << 32)) {
    mul >>= 1;
    ++shift;
  }
  mul_ = static_cast<uint32_t>(mul);
  shift_ = static_cast<int8_t>(shift);
  calibrated_ = tsc_khz != 0;
}

uint64_t GuestClock::NowNs() const { return ClockNs(CLOCK_MONOTONIC) - boot_mono_ns_; }

void GuestClock::BootWallclock(uint64_t* sec, uint32_t* nsec) const {
  *sec = boot_real_ns_ / 1'000'000'000ull;
  *nsec = static_cast<uint32_t>(boot_real_ns_ % 1'000'000'000ull);
}

Result<vcpu_time_info> GuestClock::TimeInfo() const {
  if (!calibrated_) return Fail(XEN_ENOSYS, "guest clock not calibrated");
  vcpu_time_info t{};
  // Sample the host TSC and the clock back to back; the pair defines the extrapolation.
  const uint64_t host_tsc = __rdtsc();
  t.system_time = NowNs();
  t.tsc_timestamp = host_tsc + static_cast<uint64_t>(tsc_offset_);
  t.tsc_to_system_mul = mul_;
  t.tsc_shift = shift_;
  return t;
}

}  // namespace xenkvm::vmm
