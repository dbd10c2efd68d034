// Guest system time and pvclock parameters; see guest_clock.h.
#include "vmm/guest_clock.h"

#include <time.h>

namespace xenkvm::vmm {

namespace {
constexpr uint64_t kWindowNs = 1'000'000'000;  // a new anchor and rate at least this often
// A reading ahead of the line by less than this is noise (the bracket's own width), not news.
constexpr int64_t kAheadToleranceNs = 20'000;

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
  anchor_ = rate_base_ = Reading{guest_tsc_now, MonotonicNs()};
  window_has_best_ = false;
  settled_ = false;
  SetRateLocked(tsc_khz);
}

__int128 GuestClock::GuestViewMonoNsLocked(uint64_t guest_tsc) const {
  // Signed: a reading may be on either side of the anchor.
  const __int128 ticks = static_cast<__int128>(guest_tsc) - static_cast<__int128>(anchor_.tsc);
  return static_cast<__int128>(anchor_.mono_ns) + ticks * 1'000'000 / tsc_khz_;
}

int64_t GuestClock::AheadNsLocked(const Reading& r) const {
  return static_cast<int64_t>(GuestViewMonoNsLocked(r.tsc) - static_cast<__int128>(r.mono_ns));
}

bool GuestClock::Sample(uint64_t guest_tsc, uint64_t mono_ns) {
  MutexLock lock(mutex_);
  if (!calibrated_ || mono_ns <= anchor_.mono_ns) return false;  // older than the anchor
  const Reading r{guest_tsc, mono_ns};
  if (!settled_) {
    anchor_ = rate_base_ = r;
    window_start_ns_ = mono_ns;
    window_has_best_ = false;
    settled_ = true;
    return true;
  }
  if (!window_has_best_ || AheadNsLocked(r) > AheadNsLocked(window_best_)) {
    window_best_ = r;
    window_has_best_ = true;
  }
  if (mono_ns - window_start_ns_ >= kWindowNs) {
    const Reading best = window_best_;
    // Over a second or more the two readings give the rate to better than 10 ppm.
    if (best.mono_ns > rate_base_.mono_ns && best.mono_ns - rate_base_.mono_ns >= kWindowNs) {
      const uint32_t khz =
          KhzFromSamples(rate_base_.tsc, best.tsc, best.mono_ns - rate_base_.mono_ns);
      if (khz != 0) SetRateLocked(khz);
      rate_base_ = best;
    }
    if (best.mono_ns > anchor_.mono_ns) anchor_ = best;
    window_start_ns_ = mono_ns;
    window_has_best_ = false;
    return true;
  }
  if (AheadNsLocked(r) > kAheadToleranceNs) {
    anchor_ = r;  // the guest's clock was behind: it moves forward, never back
    return true;
  }
  return false;
}

int64_t GuestClock::GuestSystemNs(uint64_t guest_tsc) const {
  MutexLock lock(mutex_);
  return static_cast<int64_t>(GuestViewMonoNsLocked(guest_tsc) - boot_mono_ns_);
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
      static_cast<unsigned __int128>(mono - anchor_.mono_ns) * tsc_khz_ / 1'000'000u;
  t.tsc_timestamp = anchor_.tsc + static_cast<uint64_t>(ticks);
  t.tsc_to_system_mul = mul_;
  t.tsc_shift = shift_;
  return t;
}

}  // namespace xenkvm::vmm
