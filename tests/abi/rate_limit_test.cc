// RateLimiter: burst, refill rate and the suppressed count, on a fake clock.
#include "abi/rate_limit.h"

#include <gtest/gtest.h>

namespace xenkvm {
namespace {

uint64_t fake_now = 1'000;
uint64_t FakeNs() { return fake_now; }

TEST(RateLimiter, BurstThenRefillAndCountsSuppressed) {
  RateLimiter limiter(10, 3, &FakeNs);  // 10/s: one token per ~100 ms
  int allowed = 0;
  for (int i = 0; i < 1000; ++i) allowed += limiter.Allow() ? 1 : 0;
  EXPECT_EQ(allowed, 3);
  fake_now += 250'000'000;  // 2 tokens
  uint64_t suppressed = 0;
  EXPECT_TRUE(limiter.Allow(&suppressed));
  EXPECT_EQ(suppressed, 997u);
  EXPECT_TRUE(limiter.Allow(&suppressed));
  EXPECT_EQ(suppressed, 0u);
  EXPECT_FALSE(limiter.Allow());
  fake_now += 3'600'000'000'000ull;  // an hour refills the burst only
  allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += limiter.Allow() ? 1 : 0;
  EXPECT_EQ(allowed, 3);
}

TEST(RateLimiter, ZeroRateAllowsNothing) {
  RateLimiter limiter(0, 5, &FakeNs);
  EXPECT_FALSE(limiter.Allow());
}

}  // namespace
}  // namespace xenkvm
