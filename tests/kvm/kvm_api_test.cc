// kvm/ on the real /dev/kvm: a VM with split irqchip, x2APIC API, MSR filter and sync regs runs
// a few instructions of 32-bit code; a port-I/O exit carries its value, a kick ends a halted
// KVM_RUN with EINTR, a kick before KVM_RUN is not lost, and the hypercall-page MSR write
// exits to user space. Skips visibly without /dev/kvm.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "kvm/pio_exit_probe.h"
#include "kvm/system.h"
#include "kvm/vm.h"
#include "vmm/x86_state.h"

namespace xenkvm::kvm {
namespace {

constexpr uint64_t kMem = 0x10000;
constexpr uint64_t kCode = 0x1000;

// The probe names this KVM's kind: PVM (the kvm_pvm module) reports rip past a port-I/O
// instruction, every other KVM at it. Asked twice, it answers the same.
TEST(KvmApi, PioExitRipProbeNamesThisKvm) {
  if (!KvmAvailable()) GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  auto system = System::Open();
  ASSERT_TRUE(system) << system.error().message;
  auto rip = ProbePioExitRip(*system);
  ASSERT_TRUE(rip) << rip.error().message;
  const bool pvm = ::access("/sys/module/kvm_pvm", F_OK) == 0;
  std::printf("this KVM: %s; rip at a port-I/O exit: %s\n", pvm ? "PVM" : "not PVM",
              PioExitRipName(*rip));
  EXPECT_EQ(*rip, pvm ? PioExitRip::kPastInstruction : PioExitRip::kAtInstruction);
  EXPECT_EQ(*ProbePioExitRip(*system), *rip);
}

TEST(KvmApi, RunExitKickAndMsr) {
  if (!KvmAvailable()) GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  InstallKickHandler();
  auto system = System::Open();
  ASSERT_TRUE(system) << system.error().message;
  auto vm = Vm::Create(*system);
  ASSERT_TRUE(vm) << vm.error().message;
  ASSERT_TRUE(vm->EnableX2apicApi());
  ASSERT_TRUE(vm->EnableSplitIrqchip());
  ASSERT_TRUE(vm->EnableUserSpaceMsrExits());
  ASSERT_TRUE(vm->TrapMsrs(0x40000000, 1));
  void* mem = mmap(nullptr, kMem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  ASSERT_TRUE(vm->SetMemory(0, 0, kMem, mem));
  // out %eax,$0x42 (eax = 0x1234); wrmsr 0x40000000 (edx:eax = 0:0x5000); hlt; jmp to hlt
  const uint8_t code[] = {0xb8, 0x34, 0x12, 0,    0,    0xe7, 0x42,  // mov $0x1234,%eax; out
                          0xb9, 0,    0,    0,    0x40, 0xb8, 0,
                          0x50, 0,    0,           // mov $0x40000000,%ecx; mov $0x5000,%eax
                          0x31, 0xd2, 0x0f, 0x30,  // xor %edx,%edx; wrmsr
                          0xf4, 0xeb, 0xfd};       // 1: hlt; jmp 1b
  std::memcpy(static_cast<uint8_t*>(mem) + kCode, code, sizeof(code));

  auto vcpu = vm->CreateVcpu(0);
  ASSERT_TRUE(vcpu) << vcpu.error().message;
  auto cpuid = system->SupportedCpuid();
  ASSERT_TRUE(cpuid);
  ASSERT_TRUE(vcpu->SetCpuid(*cpuid));
  auto sregs = vcpu->GetSregs();
  ASSERT_TRUE(sregs);
  // The PVH entry state (32-bit flat, paging off) the VMM itself uses, entered at kCode.
  const vmm::X86State st = vmm::PvhBootState(*sregs, kCode, 0);
  ASSERT_TRUE(vcpu->SetSregs(st.sregs));
  ASSERT_TRUE(vcpu->SetRegs(st.regs));
  vcpu->EnableSyncRegs();
  vcpu->BindToCurrentThread();

  ASSERT_TRUE(vcpu->Run());
  ASSERT_EQ(vcpu->run()->exit_reason, KVM_EXIT_IO);
  EXPECT_EQ(vcpu->run()->io.port, 0x42);
  uint32_t value;
  std::memcpy(&value, reinterpret_cast<uint8_t*>(vcpu->run()) + vcpu->run()->io.data_offset, 4);
  EXPECT_EQ(value, 0x1234u);
  EXPECT_EQ(vcpu->run()->s.regs.regs.rax, 0x1234u);  // sync regs published

  ASSERT_TRUE(vcpu->Run());
  ASSERT_EQ(vcpu->run()->exit_reason, KVM_EXIT_X86_WRMSR);
  EXPECT_EQ(vcpu->run()->msr.index, 0x40000000u);
  EXPECT_EQ(vcpu->run()->msr.data, 0x5000u);
  vcpu->run()->msr.error = 0;

  // A kick before KVM_RUN: the next run returns at once.
  vcpu->Kick();
  ASSERT_TRUE(vcpu->Run());
  EXPECT_EQ(vcpu->run()->exit_reason, KVM_EXIT_INTR);
  vcpu->ClearImmediateExit();

  // Halted in the kernel: only a kick from another thread gets the thread back.
  std::thread kicker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    vcpu->Kick();
  });
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(vcpu->Run());
  kicker.join();
  EXPECT_EQ(vcpu->run()->exit_reason, KVM_EXIT_INTR);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(40));
  munmap(mem, kMem);
}

}  // namespace
}  // namespace xenkvm::kvm
