// Guest system time and pvclock parameters; see guest_clock.h.
#include "vmm/guest_clock.h"

#include <time.h>

namespace xenkvm::vmm {

namespace {
uint64_t ClockNs(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace

GuestClock::GuestClock()
    : boot_mono_ns_(ClockNs(CLOCK_MONOTONIC)), boot_real_ns_(ClockNs(CLOCK_REALTIME)) {}

void GuestClock::Calibrate(uint64_t guest_tsc_now, uint32_t tsc_khz) {
  MutexLock lock(mutex_);
  anchor_tsc_ = guest_tsc_now;
  anchor_mono_ns_ = MonotonicNs();
  SetRateLocked(tsc_khz);
}

void GuestClock::Reanchor(uint64_t guest_tsc_now, uint64_t mono) {
  MutexLock lock(mutex_);
  if (!calibrated_) return;
  // Over at least a second the two readings give the rate to better than 10 ppm.
  if (mono <= anchor_mono_ns_) return;  // an older reading than the anchor: keep the anchor
  if (mono - anchor_mono_ns_ >= 1'000'000'000ull) {
    const uint32_t khz = KhzFromSamples(anchor_tsc_, guest_tsc_now, mono - anchor_mono_ns_);
    if (khz != 0) SetRateLocked(khz);
  }
  anchor_tsc_ = guest_tsc_now;
  anchor_mono_ns_ = mono;
}

void GuestClock::SetRateLocked(uint32_t tsc_khz) {
  tsc_khz_ = tsc_khz;
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

uint32_t GuestClock::KhzFromSamples(uint64_t tsc0, uint64_t tsc1, uint64_t interval_ns) {
  if (interval_ns == 0 || tsc1 <= tsc0) return 0;
  const unsigned __int128 khz =
      static_cast<unsigned __int128>(tsc1 - tsc0) * 1'000'000u / interval_ns;
  return khz > UINT32_MAX ? 0 : static_cast<uint32_t>(khz);
}

void GuestClock::RestoreSystemTime(uint64_t system_ns) {
  boot_mono_ns_ = ClockNs(CLOCK_MONOTONIC) - system_ns;
  boot_real_ns_ = ClockNs(CLOCK_REALTIME) - system_ns;
}

uint32_t GuestClock::tsc_khz() const {
  MutexLock lock(mutex_);
  return tsc_khz_;
}

uint64_t GuestClock::MonotonicNs() const { return ClockNs(CLOCK_MONOTONIC); }

uint64_t GuestClock::NowNs() const { return ClockNs(CLOCK_MONOTONIC) - boot_mono_ns_; }

void GuestClock::BootWallclock(uint64_t* sec, uint32_t* nsec) const {
  *sec = boot_real_ns_ / 1'000'000'000ull;
  *nsec = static_cast<uint32_t>(boot_real_ns_ % 1'000'000'000ull);
}

Result<vcpu_time_info> GuestClock::TimeInfo() const {
  MutexLock lock(mutex_);
  if (!calibrated_) return Fail(XEN_ENOSYS, "guest clock not calibrated");
  vcpu_time_info t{};
  // One clock read defines both halves of the pair: system time and the guest TSC it maps to.
  const uint64_t mono = MonotonicNs();
  t.system_time = mono - boot_mono_ns_;
  const unsigned __int128 ticks =
      static_cast<unsigned __int128>(mono - anchor_mono_ns_) * tsc_khz_ / 1'000'000u;
  t.tsc_timestamp = anchor_tsc_ + static_cast<uint64_t>(ticks);
  t.tsc_to_system_mul = mul_;
  t.tsc_shift = shift_;
  return t;
}

}  // namespace xenkvm::vmm
