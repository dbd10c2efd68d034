// The blkif fuzz harness over seeded random inputs, so every build exercises hostile rings.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "fuzz/blkif_requests_harness.h"

namespace xenkvm::fuzz {
namespace {

TEST(RandomBlkifRequests, HostileRingsKeepBackendInvariants) {
  std::mt19937 rng(20261130);
  for (int round = 0; round < 400; ++round) {
    std::vector<uint8_t> input(64 + rng() % (40 * 1024));
    for (auto& byte : input) byte = uint8_t(rng());
    ASSERT_TRUE(RunBlkifRequests(input)) << "round " << round;
  }
}

}  // namespace
}  // namespace xenkvm::fuzz
