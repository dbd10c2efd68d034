// The port-I/O exit probe; see pio_exit_probe.h.
#include "kvm/pio_exit_probe.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "abi/sync.h"
#include "kvm/vcpu.h"
#include "kvm/vm.h"

namespace xenkvm::kvm {

namespace {

constexpr uint64_t kProbeCodeGpa = 0x1000;
constexpr uint16_t kProbePort = 0x80;
constexpr uint8_t kProbeCode[] = {0xe6, kProbePort, 0xf4, 0xeb, 0xfd};  // out %al,$0x80; hlt; jmp

kvm_segment Flat32(uint16_t selector, uint8_t type) {
  kvm_segment s{};
  s.selector = selector;
  s.limit = 0xffffffff;
  s.type = type;
  s.present = 1;
  s.s = 1;
  s.db = 1;
  s.g = 1;
  return s;
}

Result<PioExitRip> RunProbe(const System& system) {
  Vm vm = TRY(Vm::Create(system));
  constexpr size_t kSize = 0x2000;
  void* host = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (host == MAP_FAILED) return HostFail(errno, "mmap the probe's memory");
  struct Unmap {
    void* host;
    ~Unmap() { ::munmap(host, kSize); }
  } unmap{host};
  std::memcpy(static_cast<uint8_t*>(host) + kProbeCodeGpa, kProbeCode, sizeof(kProbeCode));
  TRY(vm.SetMemory(0, 0, kSize, host));
  Vcpu vcpu = TRY(vm.CreateVcpu(0));
  kvm_sregs sregs = TRY(vcpu.GetSregs());
  sregs.cs = Flat32(0x10, 0xb);  // code, execute/read, accessed
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = Flat32(0x18, 0x3);
  sregs.cr0 = 0x11;  // PE | ET
  sregs.cr4 = 0;
  sregs.efer = 0;
  TRY(vcpu.SetSregs(sregs));
  kvm_regs regs{};
  regs.rip = kProbeCodeGpa;
  regs.rflags = 0x2;
  TRY(vcpu.SetRegs(regs));
  // A few tries: a signal may interrupt KVM_RUN before the guest gets to the `out`.
  for (int attempt = 0; attempt < 8; ++attempt) {
    TRY(vcpu.Run());
    const kvm_run* run = vcpu.run();
    if (run->exit_reason == KVM_EXIT_INTR) continue;
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != kProbePort)
      return HostFail(EPROTO, "the port-I/O probe did not exit at its `out`");
    const uint64_t rip = TRY(vcpu.GetRegs()).rip;
    if (rip == kProbeCodeGpa) return PioExitRip::kAtInstruction;
    if (rip == kProbeCodeGpa + 2) return PioExitRip::kPastInstruction;
    return HostFail(EPROTO, "the port-I/O probe's rip is neither at nor past its `out`");
  }
  return HostFail(EINTR, "the port-I/O probe never reached its `out`");
}

}  // namespace

const char* PioExitRipName(PioExitRip rip) {
  return rip == PioExitRip::kPastInstruction ? "past the instruction (PVM)" : "at the instruction";
}

Result<PioExitRip> ProbePioExitRip(const System& system) {
  // One probe per process (std::call_once can't return a Result).
  struct Answer {
    Mutex mutex;  // guards rip
    std::optional<Result<PioExitRip>> rip XENKVM_GUARDED_BY(mutex);
  };
  static Answer answer;
  MutexLock lock(answer.mutex);
  if (!answer.rip) answer.rip = RunProbe(system);
  return *answer.rip;
}

}  // namespace xenkvm::kvm
