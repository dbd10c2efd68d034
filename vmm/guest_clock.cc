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

GuestClock::GuestClock(uint32_t vcpus)
    : boot_mono_ns_(ClockNs(CLOCK_MONOTONIC)),
      boot_real_ns_(ClockNs(CLOCK_REALTIME)),
      lines_(vcpus == 0 ? 1 : vcpus) {}

void GuestClock::Calibrate(uint32_t vcpu, uint64_t guest_tsc_now, uint32_t tsc_khz) {
  MutexLock lock(mutex_);
  if (vcpu >= lines_.size()) return;
  Line& line = lines_[vcpu];
  line.anchor = line.rate_base = Reading{guest_tsc_now, MonotonicNs()};
  line.window_has_best = false;
  line.read = true;
  line.settled = false;
  if (tsc_khz != 0) SetRateLocked(tsc_khz);
}

__int128 GuestClock::GuestViewMonoNsLocked(const Line& line, uint64_t guest_tsc) const {
  // Signed: a reading may be on either side of the anchor.
  const __int128 ticks = static_cast<__int128>(guest_tsc) - static_cast<__int128>(line.anchor.tsc);
  return static_cast<__int128>(line.anchor.mono_ns) + ticks * 1'000'000 / tsc_khz_;
}

int64_t GuestClock::AheadNsLocked(const Line& line, const Reading& r) const {
  return static_cast<int64_t>(GuestViewMonoNsLocked(line, r.tsc) -
                              static_cast<__int128>(r.mono_ns));
}

GuestClock::Moved GuestClock::Sample(uint32_t vcpu, uint64_t guest_tsc, uint64_t mono_ns) {
  MutexLock lock(mutex_);
  if (!calibrated_ || vcpu >= lines_.size()) return Moved::kNothing;
  Line& line = lines_[vcpu];
  const Reading r{guest_tsc, mono_ns};
  if (!line.settled) {
    if (line.read && mono_ns <= line.anchor.mono_ns) return Moved::kNothing;
    line.anchor = line.rate_base = r;
    line.window_start_ns = mono_ns;
    line.window_has_best = false;
    line.read = line.settled = true;
    return Moved::kThisVcpu;
  }
  if (mono_ns <= line.anchor.mono_ns) return Moved::kNothing;  // older than the anchor
  if (!line.window_has_best || AheadNsLocked(line, r) > AheadNsLocked(line, line.window_best)) {
    line.window_best = r;
    line.window_has_best = true;
  }
  if (mono_ns - line.window_start_ns >= kWindowNs) {
    const Reading best = line.window_best;
    Moved moved = Moved::kThisVcpu;
    // Over a second or more the two readings give the rate to better than 10 ppm.
    if (best.mono_ns > line.rate_base.mono_ns &&
        best.mono_ns - line.rate_base.mono_ns >= kWindowNs) {
      const uint32_t khz =
          KhzFromSamples(line.rate_base.tsc, best.tsc, best.mono_ns - line.rate_base.mono_ns);
      if (khz != 0 && khz != tsc_khz_) {
        SetRateLocked(khz);
        moved = Moved::kRate;
      }
      line.rate_base = best;
    }
    if (best.mono_ns > line.anchor.mono_ns) line.anchor = best;
    line.window_start_ns = mono_ns;
    line.window_has_best = false;
    return moved;
  }
  if (AheadNsLocked(line, r) > kAheadToleranceNs) {
    line.anchor = r;  // the guest's clock was behind: it moves forward, never back
    return Moved::kThisVcpu;
  }
  return Moved::kNothing;
}

int64_t GuestClock::GuestSystemNs(uint32_t vcpu, uint64_t guest_tsc) const {
  MutexLock lock(mutex_);
  if (vcpu >= lines_.size()) return 0;
  return static_cast<int64_t>(GuestViewMonoNsLocked(lines_[vcpu], guest_tsc) - boot_mono_ns_);
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

Result<vcpu_time_info> GuestClock::TimeInfo(uint32_t vcpu) const {
  MutexLock lock(mutex_);
  if (!calibrated_ || vcpu >= lines_.size() || !lines_[vcpu].read)
    return Fail(XEN_ENOSYS, "guest clock not calibrated for this vCPU");
  const Reading& anchor = lines_[vcpu].anchor;
  vcpu_time_info t{};
  // The pair is the anchor, a real reading of this vCPU's TSC: the TSC is past it by the time
  // the guest reads the pair, as with Xen's own (a TSC it read when it wrote the pair). A pair
  // extrapolated to now could name a TSC the guest has not reached yet: the guest's unsigned
  // delta then wraps and its clock jumps centuries ahead (seen: timers set from such a reading
  // never fired, waits on it never ended).
  t.system_time = anchor.mono_ns > boot_mono_ns_ ? anchor.mono_ns - boot_mono_ns_ : 0;
  t.tsc_timestamp = anchor.tsc;
  t.tsc_to_system_mul = mul_;
  t.tsc_shift = shift_;
  return t;
}

}  // namespace xenkvm::vmm
