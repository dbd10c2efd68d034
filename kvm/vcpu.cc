// KVM vCPU; see vcpu.h.
#include "kvm/vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "kvm/flex_ioctl.h"

namespace xenkvm::kvm {

namespace {
void KickHandler(int) {}
}  // namespace

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = KickHandler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // KVM_RUN still returns EINTR; ordinary syscalls restart
    sigaction(kKickSignal, &sa, nullptr);
  });
}

Vcpu::Vcpu(Vcpu&& other) noexcept
    : id_(other.id_),
      fd_(std::move(other.fd_)),
      run_(std::exchange(other.run_, nullptr)),
      run_size_(other.run_size_) {
  owner_.store(other.owner_.load());
  has_owner_.store(other.has_owner_.load());
}

Vcpu::~Vcpu() {
  if (run_ != nullptr) ::munmap(run_, run_size_);
}

Result<> Vcpu::Run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) {
      run_->exit_reason = KVM_EXIT_INTR;
      return {};
    }
    return HostFail(errno, "KVM_RUN");
  }
  return {};
}

Result<kvm_regs> Vcpu::GetRegs() {
  kvm_regs regs{};
  if (::ioctl(fd_.get(), KVM_GET_REGS, &regs) < 0) return HostFail(errno, "KVM_GET_REGS");
  return regs;
}

Result<> Vcpu::SetRegs(const kvm_regs& regs) {
  if (::ioctl(fd_.get(), KVM_SET_REGS, &regs) < 0) return HostFail(errno, "KVM_SET_REGS");
  return {};
}

Result<kvm_sregs> Vcpu::GetSregs() {
  kvm_sregs sregs{};
  if (::ioctl(fd_.get(), KVM_GET_SREGS, &sregs) < 0) return HostFail(errno, "KVM_GET_SREGS");
  return sregs;
}

Result<> Vcpu::SetSregs(const kvm_sregs& sregs) {
  if (::ioctl(fd_.get(), KVM_SET_SREGS, &sregs) < 0) return HostFail(errno, "KVM_SET_SREGS");
  return {};
}

Result<> Vcpu::SetCpuid(std::span<const kvm_cpuid_entry2> entries) {
  FlexArg<kvm_cpuid_entry2> cpuid(static_cast<uint32_t>(entries.size()));
  std::memcpy(cpuid.entries(), entries.data(), entries.size_bytes());
  if (::ioctl(fd_.get(), kIoctlSetCpuid2, cpuid.data()) < 0)
    return HostFail(errno, "KVM_SET_CPUID2");
  return {};
}

Result<> Vcpu::SetMpState(uint32_t state) {
  kvm_mp_state mp{state};
  if (::ioctl(fd_.get(), KVM_SET_MP_STATE, &mp) < 0) return HostFail(errno, "KVM_SET_MP_STATE");
  return {};
}

Result<kvm_lapic_state> Vcpu::GetLapic() {
  kvm_lapic_state lapic{};
  if (::ioctl(fd_.get(), KVM_GET_LAPIC, &lapic) < 0) return HostFail(errno, "KVM_GET_LAPIC");
  return lapic;
}

Result<> Vcpu::SetLapic(const kvm_lapic_state& lapic) {
  if (::ioctl(fd_.get(), KVM_SET_LAPIC, &lapic) < 0) return HostFail(errno, "KVM_SET_LAPIC");
  return {};
}

Result<> Vcpu::Interrupt(uint32_t vector) {
  kvm_interrupt irq{vector};
  if (::ioctl(fd_.get(), KVM_INTERRUPT, &irq) < 0) return HostFail(errno, "KVM_INTERRUPT");
  return {};
}

Result<uint64_t> Vcpu::GetMsr(uint32_t index) {
  FlexArg<kvm_msr_entry> msrs(1);
  msrs.entries()[0].index = index;
  if (::ioctl(fd_.get(), kIoctlGetMsrs, msrs.data()) != 1)
    return HostFail(EIO, "KVM_GET_MSRS (not one MSR read)");
  return msrs.entries()[0].data;
}

Result<> Vcpu::SetMsr(uint32_t index, uint64_t value) {
  FlexArg<kvm_msr_entry> msrs(1);
  msrs.entries()[0].index = index;
  msrs.entries()[0].data = value;
  if (::ioctl(fd_.get(), kIoctlSetMsrs, msrs.data()) != 1)
    return HostFail(EIO, "KVM_SET_MSRS (not one MSR written)");
  return {};
}

Result<uint32_t> Vcpu::TscKhz() {
  int r = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  if (r <= 0) return HostFail(r < 0 ? errno : ENOSYS, "KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(r);
}

Result<> Vcpu::Ioctl(unsigned long request, void* arg, const char* what) {
  if (::ioctl(fd_.get(), request, arg) < 0) return HostFail(errno, what);
  return {};
}

void Vcpu::EnableSyncRegs() { run_->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS; }

void Vcpu::BindToCurrentThread() {
  owner_.store(pthread_self());
  has_owner_.store(true, std::memory_order_release);
}

void Vcpu::Kick() {
  // kvm_run is shared with the kernel; immediate_exit is a byte the owner clears.
  std::atomic_ref<uint8_t>(run_->immediate_exit).store(1, std::memory_order_seq_cst);
  if (has_owner_.load(std::memory_order_acquire)) pthread_kill(owner_.load(), kKickSignal);
}

void Vcpu::ClearImmediateExit() {
  std::atomic_ref<uint8_t>(run_->immediate_exit).store(0, std::memory_order_seq_cst);
}

}  // namespace xenkvm::kvm
