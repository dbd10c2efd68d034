// The VMM's KVM-free parts: per-vCPU timers, the terminal filter and the guest clock's pvclock
// scale (the PV console ring is tested in tests/backends).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "vmm/guest_clock.h"
#include "vmm/terminal_filter.h"
#include "vmm/timers.h"

namespace xenkvm::vmm {
namespace {

uint64_t MonotonicNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST(Timers, SingleShotPeriodicAndStop) {
  std::atomic<int> fired[3] = {0, 0, 0};
  Timers timers(3, MonotonicNs, [&](uint32_t v) { fired[v]++; });
  timers.Set(0, MonotonicNs() + 2'000'000, 0);
  timers.Set(1, MonotonicNs() + 1'000'000, 2'000'000);
  timers.Set(2, MonotonicNs() + 50'000'000, 0);
  timers.Set(2, 0, 0);  // stopped before it fires
  timers.Set(7, 1, 0);  // no such vCPU: ignored
  EXPECT_TRUE(WaitFor([&] { return fired[0] == 1 && fired[1] >= 3; }, std::chrono::seconds(5)));
  timers.Set(1, 0, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  EXPECT_EQ(fired[0], 1);
  EXPECT_EQ(fired[2], 0);
  const int periodic = fired[1];
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(fired[1], periodic);
  timers.Set(2, 1, 0);  // already in the past: fires at once
  EXPECT_TRUE(WaitFor([&] { return fired[2] == 1; }, std::chrono::seconds(5)));
}

// A deadline near 2^63 must sleep, not spin: wait_for(now + 2^63 ns) overflows the clock and
// returns at once. The clock is read once per loop iteration: count the reads.
std::atomic<uint64_t> clock_reads{0};
uint64_t CountingNs() {
  clock_reads++;
  return MonotonicNs();
}

TEST(Timers, HugeDeadlineSleepsAndStopsPromptly) {
  std::atomic<int> fired{0};
  {
    Timers timers(1, CountingNs, [&](uint32_t) { fired++; });
    timers.Set(0, (1ull << 63) - 1, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_LT(clock_reads.load(), 100u);  // a spin makes millions
  }  // ~Timers returns (it waited on the spinning thread's lock before)
  EXPECT_EQ(fired, 0);
  EXPECT_EQ(WaitSlice(UINT64_MAX).count(), static_cast<int64_t>(kMaxWaitSliceNs));
}

TEST(Timers, HugePeriodFiresOnceNotContinuously) {
  std::atomic<int> fired{0};
  Timers timers(1, MonotonicNs, [&](uint32_t) { fired++; });
  timers.Set(0, 1, UINT64_MAX - 5);  // now + period wraps without saturation
  EXPECT_TRUE(WaitFor([&] { return fired >= 1; }, std::chrono::seconds(5)));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(timers.Expiries(), 1u);
}

// Machine pause: a paused timer does not fire even when its deadline passed; it fires at
// Resume. A fake clock makes "passed" exact.
TEST(Timers, PausedTimersFireOnlyAfterResume) {
  std::atomic<uint64_t> now{0};
  std::atomic<int> fired{0};
  Timers timers(
      1, [&] { return now.load(); }, [&](uint32_t) { fired++; });
  timers.Pause();
  timers.Set(0, 1'000'000, 0);
  now = 5'000'000;  // past the deadline
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(fired, 0);
  timers.Resume();
  EXPECT_TRUE(WaitFor([&] { return fired == 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(timers.Expiries(), 1u);
}

// Pause returns only once an expiry callback already running has finished.
TEST(Timers, PauseWaitsForARunningCallback) {
  std::atomic<bool> in_callback{false}, release{false}, paused{false};
  Timers timers(1, MonotonicNs, [&](uint32_t) {
    in_callback = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  timers.Set(0, 1, 0);
  ASSERT_TRUE(WaitFor([&] { return in_callback.load(); }, std::chrono::seconds(5)));
  std::thread pauser([&] {
    timers.Pause();
    paused = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(paused);
  release = true;
  pauser.join();
  EXPECT_TRUE(paused);
  timers.Resume();
}

TEST(TerminalFilter, DropsEscapesAndControlsKeepsTextAndUtf8) {
  TerminalFilter filter;
  std::string out;
  const std::string in =
      "ok\x1b]0;pwned\x07 \x1b[2J\r\x9b"
      "31m\xc2\x9b"
      "1m caf\xc3\xa9 \xc2\xa9\x7f\tend\n";
  filter.Filter(std::span(in.data(), in.size()), &out);
  EXPECT_EQ(out, "ok]0;pwned [2J31m1m caf\xc3\xa9 \xc2\xa9\tend\n");
  // A C1 control split across two writes is still caught.
  out.clear();
  filter.Filter(std::span("\xc2", 1), &out);
  filter.Filter(std::span("\x9bX", 2), &out);
  EXPECT_EQ(out, "X");
}

TEST(GuestClock, PvclockScale) {
  GuestClock clock;
  EXPECT_FALSE(clock.TimeInfo(0));      // not calibrated yet
  clock.Calibrate(0, 1000, 2'000'000);  // 2 GHz: 0.5 ns per tick
  auto t = clock.TimeInfo(0);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->tsc_shift, 0);
  EXPECT_NEAR(t->tsc_to_system_mul / 4294967296.0, 0.5, 1e-6);
  clock.Calibrate(0, 0, 500'000);  // 500 MHz: 2 ns per tick needs a shift
  t = clock.TimeInfo(0);
  ASSERT_TRUE(t);
  // ns per tick = mul * 2^shift / 2^32 (mul < 2^32, so 2.0 needs a shift).
  EXPECT_GT(t->tsc_shift, 0);
  EXPECT_NEAR(t->tsc_to_system_mul / 4294967296.0 * (1 << t->tsc_shift), 2.0, 1e-6);
}

// The host clock the guest's pvclock maps `tsc` to (GuestSystemNs is system time: since boot).
int64_t GuestViewMono(const GuestClock& clock, uint64_t tsc) {
  const int64_t boot = static_cast<int64_t>(clock.MonotonicNs() - clock.NowNs());
  return clock.GuestSystemNs(0, tsc) + boot;
}

TEST(GuestClock, TheFirstReadingAfterCalibrationSettlesThePair) {
  GuestClock clock;
  clock.Calibrate(0, 1000, 2'000'000);  // 2 GHz
  const uint64_t t0 = clock.MonotonicNs() + 1'000'000;
  // KVM moved the guest's TSC when the vCPU first ran: the first reading is taken as it is,
  // even though it is far behind the calibration's line.
  EXPECT_NE(GuestClock::Moved::kNothing, clock.Sample(0, 5000, t0));
  EXPECT_NEAR(static_cast<double>(GuestViewMono(clock, 5000)), static_cast<double>(t0), 1e5);
  // A reading older than the anchor (a slower vCPU thread) changes nothing.
  EXPECT_EQ(GuestClock::Moved::kNothing, clock.Sample(0, 9'000'000'000ull, t0 - 1));
  EXPECT_NEAR(static_cast<double>(GuestViewMono(clock, 5000)), static_cast<double>(t0), 1e5);
}

TEST(GuestClock, AReadingBehindTheLineLeavesItAndOneAheadMovesItForward) {
  GuestClock clock;
  clock.Calibrate(0, 0, 2'000'000);  // 2 GHz: 2,000,000 ticks per ms
  const uint64_t t0 = clock.MonotonicNs() + 1'000'000;
  ASSERT_NE(GuestClock::Moved::kNothing, clock.Sample(0, 1'000'000'000, t0));
  constexpr uint64_t kMs = 1'000'000;
  // 10 ms later a TSC that moved only 5 ms: frozen while the vCPU was out of KVM_RUN.
  EXPECT_EQ(GuestClock::Moved::kNothing,
            clock.Sample(0, 1'000'000'000 + 5 * 2'000'000, t0 + 10 * kMs));
  EXPECT_NEAR(static_cast<double>(GuestViewMono(clock, 1'000'000'000)), double(t0), 1e3);
  // 20 ms later a TSC that moved 22 ms: the guest's clock was behind, it moves forward.
  const uint64_t ahead_tsc = 1'000'000'000 + 22 * 2'000'000;
  EXPECT_NE(GuestClock::Moved::kNothing, clock.Sample(0, ahead_tsc, t0 + 20 * kMs));
  EXPECT_NEAR(static_cast<double>(GuestViewMono(clock, ahead_tsc)), double(t0 + 20 * kMs), 1e3);
  // The published pair is that reading itself, never a TSC the guest has not reached yet.
  auto t = clock.TimeInfo(0);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->tsc_timestamp, ahead_tsc);
  EXPECT_EQ(static_cast<int64_t>(t->system_time), clock.GuestSystemNs(0, ahead_tsc));
}

TEST(GuestClock, EachVcpuGetsAPairFromItsOwnTsc) {
  // vCPU 1's TSC runs 5 ms behind vCPU 0's (offsets differ): each pair is its own vCPU's reading,
  // so neither vCPU is handed a TSC it has not reached.
  GuestClock clock(2);
  EXPECT_FALSE(clock.TimeInfo(1));  // no reading of vCPU 1 yet
  clock.Calibrate(0, 0, 2'000'000);
  const uint64_t t0 = clock.MonotonicNs() + 1'000'000;
  ASSERT_NE(GuestClock::Moved::kNothing, clock.Sample(0, 100'000'000, t0));
  ASSERT_NE(GuestClock::Moved::kNothing, clock.Sample(1, 90'000'000, t0));
  auto t0_info = clock.TimeInfo(0);
  auto t1_info = clock.TimeInfo(1);
  ASSERT_TRUE(t0_info && t1_info);
  EXPECT_EQ(t0_info->tsc_timestamp, 100'000'000u);
  EXPECT_EQ(t1_info->tsc_timestamp, 90'000'000u);
  EXPECT_EQ(t0_info->system_time, t1_info->system_time);
  EXPECT_FALSE(clock.TimeInfo(2));  // no such vCPU
}

TEST(GuestClock, TheRateComesFromTheLeastBehindReadingsOfEachSecond) {
  // The guest's TSC really ticks at 1.5 GHz; the kernel said 1.62 GHz (8% off, as seen in a
  // nested VM). Every other reading lags the line by 3 ms (frozen out of KVM_RUN).
  GuestClock clock;
  clock.Calibrate(0, 0, 1'620'000);
  const uint64_t t0 = clock.MonotonicNs() + 1'000'000;
  constexpr uint64_t kMs = 1'000'000;
  auto on_line = [&](uint64_t t) { return 7'000'000 + (t - t0) / kMs * 1'500'000; };
  for (uint64_t ms = 0; ms <= 6000; ms += 100) {
    const uint64_t t = t0 + ms * kMs;
    const bool lags = (ms / 100) % 2 == 1;
    clock.Sample(0, on_line(t) - (lags ? 3 * 1'500'000 : 0), t);
  }
  EXPECT_NEAR(clock.tsc_khz(), 1'500'000.0, 10.0);
  // The pair sits on the line: the guest's clock reads the host's within 50 us.
  const uint64_t t = t0 + 6000 * kMs;
  EXPECT_NEAR(static_cast<double>(GuestViewMono(clock, on_line(t))), double(t), 5e4);
}

}  // namespace
}  // namespace xenkvm::vmm
