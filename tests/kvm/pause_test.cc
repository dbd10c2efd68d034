// vmm::Machine::Pause/Resume on the real /dev/kvm (docs/control.md), what snapshots build on:
// a guest storming IPIs over 4 vCPUs is paused again and again; while paused, every vCPU's
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
  config.console = {.xen_fd = -1, .ring_fd = -1, .input_fd = -1};
  auto machine = Machine::Create(config);
  ASSERT_TRUE(machine) << Describe(machine.error());
  Machine& m = **machine;
  ASSERT_TRUE(m.LoadGuest(image));

  EXPECT_FALSE(m.Resume());  // not paused
  EXPECT_FALSE(m.ForEachParkedVcpu([](uint32_t, kvm::Vcpu&) -> Result<> { return {}; }));

  MachineEnd end;
  std::thread runner([&] { end = m.Run(); });
  const std::thread::id test_thread = std::this_thread::get_id();
  int cycles = 0;
  for (;;) {
    if (!m.Pause()) break;  // the run is ending
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
    auto r1 = read(first);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto r2 = read(second);
    if (r1 && r2) {
      for (uint32_t v = 0; v < config.vcpus; ++v)
        EXPECT_EQ(std::memcmp(&first[v], &second[v], sizeof(kvm_regs)), 0) << "vCPU " << v;
      EXPECT_TRUE(other_thread);
    } else {
      EXPECT_TRUE(m.Stopping()) << "ForEachParkedVcpu failed while running";
    }
    ASSERT_TRUE(m.Resume());
    ++cycles;
  }
  runner.join();
  EXPECT_EQ(end.reason, EndReason::kPoweroff) << end.message;
  EXPECT_GT(cycles, 0);
  std::printf("ipi_storm: %d pause cycles\n", cycles);
}

}  // namespace
}  // namespace xenkvm::vmm
