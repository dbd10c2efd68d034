// The xenstore ring fuzz harness over seeded random inputs, so every build exercises hostile
// ring traffic.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <vector>

#include "fuzz/xenstore_ring_harness.h"

namespace xenkvm::fuzz {
namespace {

TEST(RandomXenstoreRing, HostileTrafficKeepsXenstoredGuarantees) {
  std::mt19937 rng(20261130);
  uint64_t replies = 0;
  for (int round = 0; round < 1500; ++round) {
    std::vector<uint8_t> input(64 + rng() % 1024);
    for (auto& byte : input) byte = uint8_t(rng());
    ASSERT_TRUE(RunXenstoreRing(input, &replies)) << "round " << round;
  }
  EXPECT_GT(replies, 1500u * 64) << "the traffic hardly reached the protocol layer";
  std::printf("reply bytes over all rounds: %llu\n", (unsigned long long)replies);
}

}  // namespace
}  // namespace xenkvm::fuzz
