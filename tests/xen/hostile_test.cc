// Regression tests for what a hostile guest could do to the VMM through hypercalls: timer and
// poll deadlines near 2^63, unbounded logging of unknown sub-ops, huge console_io calls. Each
// failed (overflow, unbounded growth, non-preemptible loop) before its fix.
#include <gtest/gtest.h>

#include <string>

#include "tests/xen/hypercall_fixture.h"

namespace xenkvm::xen::testing {
namespace {

constexpr uint64_t kTwo63 = 1ull << 63;

TEST_F(HypercallTest, SetTimerOpHugeOrNegativeTimeoutFiresIn100ms) {
  const uint64_t now = platform_.now_ns;
  // Negative as Xen's s_time_t: Linux's wrapped jiffies.
  EXPECT_EQ(Call(__HYPERVISOR_set_timer_op, kTwo63 + 5), 0);
  EXPECT_EQ(platform_.timers[0].first, now + 100'000'000);
  // More than 2^50 ns ahead.
  EXPECT_EQ(Call(__HYPERVISOR_set_timer_op, now + (1ull << 51)), 0);
  EXPECT_EQ(platform_.timers[0].first, now + 100'000'000);
  EXPECT_EQ(Call(__HYPERVISOR_set_timer_op, kTwo63 - 1), 0);
  EXPECT_EQ(platform_.timers[0].first, now + 100'000'000);
  // Within 2^50 ns: exactly as asked.
  EXPECT_EQ(Call(__HYPERVISOR_set_timer_op, now + (1ull << 49)), 0);
  EXPECT_EQ(platform_.timers[0].first, now + (1ull << 49));
}

TEST_F(HypercallTest, SingleshotBeyondSignedRangeFiresAtOnce) {
  Put(kArg, vcpu_set_singleshot_timer_t{kTwo63 + 1, 0});
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer, 0, kArg), 0);
  EXPECT_LE(platform_.timers[0].first, platform_.now_ns);
  EXPECT_NE(platform_.timers[0].first, 0u);  // armed, in the past
}

TEST_F(HypercallTest, PeriodicTimerPeriodBounds) {
  Put(kArg, vcpu_set_periodic_timer_t{(1ull << 62)});  // > STIME_DELTA_MAX
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_periodic_timer, 0, kArg), -XEN_EINVAL);
  Put(kArg, vcpu_set_periodic_timer_t{UINT64_MAX});
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_periodic_timer, 0, kArg), -XEN_EINVAL);
  Put(kArg, vcpu_set_periodic_timer_t{(1ull << 62) - 1});
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_periodic_timer, 0, kArg), 0);
}

TEST_F(HypercallTest, PollTimeoutBeyondSignedRangeReturnsAtOnce) {
  ASSERT_EQ(MapSharedInfo(0x40), 0);
  evtchn_bind_ipi quiet{.vcpu = 0, .port = 0};
  ASSERT_TRUE(engine_->BindIpi(quiet));
  sched_poll_t poll{};
  uint64_t ports_gva = kArg + 0x100;
  std::memcpy(&poll.ports, &ports_gva, 8);
  poll.nr_ports = 1;
  poll.timeout = kTwo63 + 1;  // negative for Xen's timer: already expired
  Put(kArg, poll);
  Put<uint32_t>(ports_gva, quiet.port);
  EXPECT_EQ(Call(__HYPERVISOR_sched_op, SCHEDOP_poll, kArg), 0);
  EXPECT_EQ(platform_.sleeps, 0);
}

TEST_F(HypercallTest, UnknownSubOpLoggingIsBounded) {
  ::testing::internal::CaptureStderr();
  for (uint64_t op = 1000; op < 201'000; ++op) {
    EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, op, 0, 0), -XEN_ENOSYS);
  }
  for (uint64_t nr = 0; nr < 20'000; ++nr) (void)Call(64 + nr);
  const std::string log = ::testing::internal::GetCapturedStderr();
  // The default burst is 20 lines; the whole loop runs in well under the seconds it would
  // take to earn hundreds more.
  EXPECT_GT(log.size(), 0u);
  EXPECT_LT(log.size(), 64u * 1024);
}

TEST_F(HypercallTest, ConsoleWriteIsBoundedPerCall) {
  // A 4 GiB count: only console_io_max_bytes are read and shown, and the call returns.
  EXPECT_EQ(Call(__HYPERVISOR_console_io, CONSOLEIO_write, UINT32_MAX, kArg), 0);
  EXPECT_EQ(platform_.console.size(), Domain::Options{}.console_io_max_bytes);
}

TEST_F(HypercallTest, ConsoleWriteStopsAtShutdown) {
  platform_.shutdown_reason = SHUTDOWN_poweroff;
  EXPECT_EQ(Call(__HYPERVISOR_console_io, CONSOLEIO_write, 4096, kArg), 0);
  EXPECT_EQ(platform_.console.size(), 0u);
}

TEST_F(HypercallTest, ConsoleReadCountOverlappingErrnosIsRefused) {
  EXPECT_EQ(Call(__HYPERVISOR_console_io, CONSOLEIO_read, 0x80000000u, kArg), -XEN_E2BIG);
}

TEST_F(HypercallTest, HypercallWritesThroughReadOnlyMappingFault) {
  // xen_version(XENVER_extraversion) writes 16 bytes to the guest's buffer: a read-only page
  // there is -EFAULT (GuestAccess asks the walk for a write), and nothing is written.
  platform_.read_only_pages.push_back(kArg);
  Put<uint64_t>(kArg, 0x1111);
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_extraversion, kArg), -XEN_EFAULT);
  EXPECT_EQ(Get<uint64_t>(kArg), 0x1111u);
  // Reads through it are fine.
  Put(kArg, vcpu_set_singleshot_timer_t{platform_.now_ns + 10, 0});
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer, 0, kArg), 0);
}

}  // namespace
}  // namespace xenkvm::xen::testing
