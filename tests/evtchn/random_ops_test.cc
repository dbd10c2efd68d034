// The fuzz harness over seeded random inputs, so every build exercises hostile op sequences.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "fuzz/evtchn_ops_harness.h"

namespace xenkvm::fuzz {
namespace {

TEST(RandomEvtchnOps, HostileSequencesKeepXenInvariants) {
  std::mt19937 rng(20261125);
  for (int round = 0; round < 3000; ++round) {
    std::vector<uint8_t> input(64 + rng() % 1024);
    for (auto& byte : input) byte = uint8_t(rng());
    ASSERT_TRUE(RunEvtchnOps(input)) << "round " << round;
  }
}

}  // namespace
}  // namespace xenkvm::fuzz
