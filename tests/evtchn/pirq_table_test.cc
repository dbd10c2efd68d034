// PirqTable's keep-until-bound protocol: a device raises a PIRQ before (every third round) or
// while the guest binds it, over and over. Every raise must reach the port, either directly or
// through the bind (no consumer runs, so the port must be pending after both are done).
#include "evtchn/pirq_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tests/evtchn/fake_guest.h"

namespace xenkvm::evtchn::testing {
namespace {

using Guest = FakeGuest<abi::Layout64>;
constexpr uint32_t kPirq = 700;

void Spin(uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) __asm__ volatile("pause");
}

TEST(PirqTable, RaiseRacingTheBindIsNeverLost) {
  Guest g(1);
  PirqTable pirqs(*g.engine, 1);
  std::atomic<int> go{0};
  std::atomic<bool> stop{false};
  std::thread device([&] {
    int seen = 0;
    while (!stop.load()) {
      const int want = go.load(std::memory_order_acquire);
      if (want <= 0 || want == seen) {  // no new round yet (negative: our own answer)
        std::this_thread::yield();
        continue;
      }
      seen = want;
      Spin(uint32_t(want) * 7919u % 64u);  // sweep the raise across the bind's window
      pirqs.RaiseMsi(kPirq);
      go.store(-want, std::memory_order_release);  // done with round `want`
    }
  });
  for (int round = 1; round <= 20000; ++round) {
    go.store(round, std::memory_order_release);  // the device raises now, as we bind
    if (round % 3 == 0) {  // every third round the raise surely comes first: kept for the bind
      while (go.load(std::memory_order_acquire) != -round) std::this_thread::yield();
      ASSERT_TRUE(pirqs.KeptPending(kPirq));
    }
    Spin(uint32_t(round) * 104729u % 64u);
    evtchn_bind_pirq bind{.pirq = kPirq, .flags = 0, .port = 0};
    ASSERT_TRUE(pirqs.Bind(bind));
    while (go.load(std::memory_order_acquire) != -round) std::this_thread::yield();
    ASSERT_TRUE(g.Pending(bind.port)) << "round " << round << ": the raise was lost";
    EXPECT_FALSE(pirqs.KeptPending(kPirq)) << "round " << round;
    g.ClearPending(bind.port);
    ASSERT_TRUE(g.engine->Close({.port = bind.port}));
  }
  stop.store(true);
  device.join();
}

TEST(PirqTable, MsiRaisesOnlyEmulatedMsiPirqs) {
  Guest g(1);
  PirqTable pirqs(*g.engine, 1);
  EXPECT_FALSE(pirqs.RaiseMsi(0));  // Xen's hvm_inject_msi: PIRQ 0 is -ERANGE
  EXPECT_FALSE(pirqs.RaiseMsi(uint32_t(PirqTable::kNrPirqs)));
  EXPECT_FALSE(pirqs.KeptPending(0));
  physdev_map_pirq gsi{};
  gsi.domid = DOMID_SELF;
  gsi.type = MAP_PIRQ_TYPE_GSI;
  gsi.index = 20;
  gsi.pirq = -1;
  ASSERT_TRUE(pirqs.Map(gsi, /*vector_callback=*/true));
  EXPECT_FALSE(pirqs.RaiseMsi(uint32_t(gsi.pirq)));  // a GSI's PIRQ is not an MSI's
  EXPECT_FALSE(pirqs.KeptPending(uint32_t(gsi.pirq)));
  EXPECT_FALSE(pirqs.RaiseMsi(kPirq));  // unbound: kept
  EXPECT_TRUE(pirqs.KeptPending(kPirq));
}

}  // namespace
}  // namespace xenkvm::evtchn::testing
