// Eventfd routes raise ports and PIRQs, including while shared_info is unmapped.
#include "evtchn/eventfd_router.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <thread>

#include "tests/evtchn/fake_guest.h"

namespace xenkvm::evtchn {
namespace {

using testing::FakeGuest;

// Waits (without asserting on time) until the router has handled `n` signals.
void WaitForSignals(const EventfdRouter& router, uint64_t n) {
  while (router.signals_handled() < n) std::this_thread::yield();
}

void Signal(int fd) {
  uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof(one)), ssize_t(sizeof(one)));
}

TEST(EventfdRouter, SignalRaisesPortAndPirq) {
  FakeGuest<abi::Layout64> g(2, /*start_worker=*/true);
  evtchn_bind_ipi ipi{.vcpu = 1, .port = 0};
  ASSERT_TRUE(g.engine->BindIpi(ipi));
  evtchn_bind_pirq pirq{.pirq = 33, .flags = 0, .port = 0};
  ASSERT_TRUE(g.engine->BindPirq(pirq));

  EventfdRouter router(*g.engine);
  int port_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int pirq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_TRUE(router.AddPortRoute(port_fd, ipi.port));
  ASSERT_TRUE(router.AddPirqRoute(pirq_fd, 33));
  EXPECT_EQ(router.AddPortRoute(port_fd, ipi.port).error().xen_errno, XEN_EEXIST);

  Signal(port_fd);
  WaitForSignals(router, 1);
  EXPECT_TRUE(g.Pending(ipi.port));
  EXPECT_TRUE(g.SelectorBit(1, ipi.port));
  EXPECT_EQ(g.sinks[1].injects, 1);

  Signal(pirq_fd);
  WaitForSignals(router, 2);
  EXPECT_TRUE(g.Pending(pirq.port));

  ASSERT_TRUE(router.Remove(port_fd));
  EXPECT_EQ(router.Remove(port_fd).error().xen_errno, XEN_ENOENT);
  close(port_fd);
  close(pirq_fd);
}

TEST(EventfdRouter, SignalWhileSharedInfoUnmappedIsDeliveredLater) {
  FakeGuest<abi::Layout64> g(1, /*start_worker=*/true);
  evtchn_bind_ipi ipi{.vcpu = 0, .port = 0};
  ASSERT_TRUE(g.engine->BindIpi(ipi));
  EventfdRouter router(*g.engine);
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_TRUE(router.AddPortRoute(fd, ipi.port));

  ASSERT_TRUE(g.memory.RemoveSlot(testing::kSharedInfoSlot));
  Signal(fd);
  WaitForSignals(router, 1);
  EXPECT_FALSE(g.Pending(ipi.port));
  EXPECT_EQ(g.engine->Counters(ipi.port).deferred, 1u);
  ASSERT_TRUE(g.memory.AddSlot(testing::kSharedInfoSlot, testing::kSharedInfoGpa, abi::kPageSize,
                               g.shared_page.get()));
  // The engine's worker retries until the page is back.
  while (g.sinks[0].injects.load() == 0) std::this_thread::yield();
  EXPECT_TRUE(g.Pending(ipi.port));
  EXPECT_TRUE(g.SelectorBit(0, ipi.port));
  ASSERT_TRUE(router.Remove(fd));
  close(fd);
}

// Routes by id: an eventfd bound to a route delivers to whatever the route names at the time of
// the signal; a signal on a removed route is dropped and counted.
TEST(EventfdRouter, RouteIdsChangeAndRemoveWhileBound) {
  FakeGuest<abi::Layout64> g(1, /*start_worker=*/true);
  evtchn_bind_ipi a{.vcpu = 0, .port = 0};
  evtchn_bind_ipi b{.vcpu = 0, .port = 0};
  ASSERT_TRUE(g.engine->BindIpi(a));
  ASSERT_TRUE(g.engine->BindIpi(b));
  EventfdRouter router(*g.engine);
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_TRUE(router.AddRouteBinding(fd, 5));  // the route may come later
  ASSERT_TRUE(
      router.SetRoute(5, {.is_pirq = false, .pirq = 0, .port = a.port, .vcpu = 0, .priority = 7}));
  Signal(fd);
  WaitForSignals(router, 1);
  EXPECT_TRUE(g.Pending(a.port));
  EXPECT_FALSE(g.Pending(b.port));

  ASSERT_TRUE(
      router.SetRoute(5, {.is_pirq = false, .pirq = 0, .port = b.port, .vcpu = 0, .priority = 0}));
  Signal(fd);
  WaitForSignals(router, 2);
  EXPECT_TRUE(g.Pending(b.port));
  EXPECT_EQ(router.GetRoute(5)->port, b.port);

  ASSERT_TRUE(router.RemoveRoute(5));
  EXPECT_EQ(router.RemoveRoute(5).error().xen_errno, XEN_ENOENT);
  EXPECT_EQ(router.GetRoute(5).error().xen_errno, XEN_ENOENT);
  EXPECT_FALSE(router.RaiseRoute(5));
  Signal(fd);
  while (router.signals_dropped() < 1) std::this_thread::yield();
  EXPECT_EQ(router.signals_handled(), 2u);

  EXPECT_EQ(
      router.SetRoute(6, {.is_pirq = false, .pirq = 0, .port = a.port, .vcpu = 4096, .priority = 7})
          .error()
          .xen_errno,
      XEN_EINVAL);
  EXPECT_EQ(
      router.SetRoute(6, {.is_pirq = false, .pirq = 0, .port = a.port, .vcpu = 0, .priority = 16})
          .error()
          .xen_errno,
      XEN_EINVAL);
  ASSERT_TRUE(router.Remove(fd));
  close(fd);
}

}  // namespace
}  // namespace xenkvm::evtchn
