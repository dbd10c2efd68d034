// PIRQ numbers carried in vector-0 MSIs.
#include "evtchn/msi.h"

#include <gtest/gtest.h>

#include "tests/evtchn/fake_guest.h"

namespace xenkvm::evtchn {
namespace {

TEST(PirqFromMsi, VectorZeroCarriesThePirqInTheDestinationBits) {
  EXPECT_EQ(PirqFromMsi(0xfee00000 | (0x2a << 12), 0x0000), 0x2au);
  EXPECT_EQ(PirqFromMsi(0xfee00000 | (0x34 << 12) | (uint64_t(0x12) << 40), 0x4000), 0x1234u);
  EXPECT_EQ(PirqFromMsi(0xfee00000 | (0xff << 12) | (uint64_t(0xffffff) << 40), 0), 0xffffffffu);
  EXPECT_FALSE(PirqFromMsi(0xfee00000 | (0x2a << 12), 0x0031));  // vector 0x31: a real MSI
}

TEST(PirqFromMsi, RaisesTheBoundPort) {
  testing::FakeGuest<abi::Layout64> g(1);
  evtchn_bind_pirq op{.pirq = 0x2a, .flags = 0, .port = 0};
  ASSERT_TRUE(g.engine->BindPirq(op));
  auto pirq = PirqFromMsi(0xfee00000 | (0x2a << 12), 0);
  ASSERT_TRUE(pirq);
  EXPECT_TRUE(g.engine->RaisePirq(*pirq));
  EXPECT_TRUE(g.Pending(op.port));
  EXPECT_FALSE(g.engine->RaisePirq(0x2b));  // unbound PIRQ: dropped
}

}  // namespace
}  // namespace xenkvm::evtchn
