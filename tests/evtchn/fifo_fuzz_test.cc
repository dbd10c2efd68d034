// The FIFO fuzz harness over seeded random inputs, so every build exercises hostile FIFO use.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "fuzz/evtchn_fifo_harness.h"

namespace xenkvm::fuzz {
namespace {

TEST(RandomFifoOps, HostileSequencesKeepXenInvariants) {
  std::mt19937 rng(20261130);
  for (int round = 0; round < 400; ++round) {
    std::vector<uint8_t> input(64 + rng() % 1024);
    for (auto& byte : input) byte = uint8_t(rng());
    // Bias towards the FIFO setup ops so most rounds get past init_control.
    for (size_t i = 0; i + 2 < input.size(); i += 29)
      input[i] = uint8_t(rng() % 2);  // init_control or expand_array
    ASSERT_TRUE(RunFifoOps(input)) << "round " << round;
  }
}

}  // namespace
}  // namespace xenkvm::fuzz
