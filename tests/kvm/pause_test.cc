// vmm::Machine::Pause/Resume on the real /dev/kvm (docs/control.md), what snapshots build on:
// a guest storming IPIs over 4 vCPUs (held storming) is paused 40 times; while paused, every vCPU's
// registers read on its own thread (ForEachParkedVcpu) are the same twice over (nothing runs),
// and the guest still ends with its exact counts (PASS, poweroff). Skips without /dev/kvm.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "kvm/system.h"
#include "vmm/machine.h"

namespace xenkvm::vmm {
namespace {

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(MachinePause, ParkedVcpusHoldStillAndTheGuestFinishes) {
  if (!kvm::KvmAvailable()) GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  const std::vector<uint8_t> image = ReadFile(XENKVM_GUESTS_DIR "/ipi_storm.elf");
  ASSERT_FALSE(image.empty());
  MachineConfig config;
  config.vcpus = 4;
  config.memory_mib = 64;
  config.log_stages = false;
  config.console = {.xen_fd = 2, .ring_fd = -1, .input_fd = -1};  // a FAIL line shows why
  config.cmdline = "hold=1";  // storming until released (guests/runtime/xs.h)
  auto machine = Machine::Create(config);
  ASSERT_TRUE(machine) << Describe(machine.error());
  Machine& m = **machine;
  ASSERT_TRUE(m.LoadGuest(image));

  EXPECT_FALSE(m.Resume());  // not paused
  EXPECT_FALSE(m.ForEachParkedVcpu([](uint32_t, kvm::Vcpu&) -> Result<> { return {}; }));

  MachineEnd end;
  std::thread runner([&] { end = m.Run(); });
  const std::thread::id test_thread = std::this_thread::get_id();
  constexpr int kCycles = 40;
  int cycles = 0;
  // A failed ASSERT leaves the lambda only: the guest is still released and the run joined.
  [&] {
    // Stage 11: all four vCPUs have threads and storm (before, a vCPU without a thread is
    // worked on from here, and vCPU0's boot state is applied when its thread starts).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (m.LastStage() < 11 && !m.Stopping() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_GE(m.LastStage(), 11u) << "the storm did not start";
    for (; cycles < kCycles; ++cycles) {
      ASSERT_TRUE(m.Pause());
      ASSERT_EQ(m.PauseCount(), 1u);
      ASSERT_TRUE(m.Pause());  // counted
      ASSERT_TRUE(m.Resume());
      ASSERT_EQ(m.PauseCount(), 1u);
      std::vector<kvm_regs> first(config.vcpus), second(config.vcpus);
      bool other_thread = true;
      auto read = [&](std::vector<kvm_regs>& out) {
        return m.ForEachParkedVcpu([&](uint32_t id, kvm::Vcpu& vcpu) -> Result<> {
          other_thread &= std::this_thread::get_id() != test_thread;
          out[id] = TRY(vcpu.GetRegs());
          return {};
        });
      };
      ASSERT_TRUE(read(first));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ASSERT_TRUE(read(second));
      for (uint32_t v = 0; v < config.vcpus; ++v)
        EXPECT_EQ(std::memcmp(&first[v], &second[v], sizeof(kvm_regs)), 0) << "vCPU " << v;
      EXPECT_TRUE(other_thread) << "parked vCPUs are worked on by their own threads";
      ASSERT_TRUE(m.Resume());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the storm goes on
    }
  }();
  while (m.PauseCount() > 0 && m.Resume()) {
  }
  const std::string release =
      "/local/domain/" + std::to_string(m.domain().domid()) + "/data/release";
  EXPECT_TRUE(m.store().Write(m.store_dom0(), 0, release, "1"));
  runner.join();
  EXPECT_EQ(end.reason, EndReason::kPoweroff) << end.message;
  EXPECT_EQ(cycles, kCycles);
  std::printf("ipi_storm: %d pause cycles during its storm\n", cycles);
}

}  // namespace
}  // namespace xenkvm::vmm
