// One KVM vCPU: its fd and the shared kvm_run page, register/LAPIC/MP-state access, CPUID,
// sync regs and the kick that forces it out of KVM_RUN. Follows the KVM API (api.rst).
#pragma once

#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <span>

#include "abi/result.h"
#include "kvm/fd.h"

namespace xenkvm::kvm {

// The signal used to kick a vCPU thread out of KVM_RUN. Its handler does nothing: the
// interrupted ioctl returns EINTR, and immediate_exit covers a kick that lands before KVM_RUN.
inline constexpr int kKickSignal = SIGUSR1;
// Installs the no-op handler once per process (idempotent, thread-safe).
void InstallKickHandler();

// Threads: every method except Kick() must be called from the owning thread (the one that
// called BindToCurrentThread(), or before the vCPU runs). Kick() may be called from any thread.
class Vcpu {
 public:
  Vcpu(uint32_t id, Fd fd, kvm_run* run, size_t run_size)
      : id_(id), fd_(std::move(fd)), run_(run), run_size_(run_size) {}
  Vcpu(Vcpu&& other) noexcept;
  Vcpu& operator=(Vcpu&&) = delete;
  Vcpu(const Vcpu&) = delete;
  ~Vcpu();

  uint32_t id() const { return id_; }
  kvm_run* run() { return run_; }
  const kvm_run* run() const { return run_; }

  // KVM_RUN. A kick (signal or immediate_exit) yields exit_reason KVM_EXIT_INTR, not an error.
  Result<> Run();

  Result<kvm_regs> GetRegs();
  Result<> SetRegs(const kvm_regs& regs);
  Result<kvm_sregs> GetSregs();
  Result<> SetSregs(const kvm_sregs& sregs);
  Result<> SetCpuid(std::span<const kvm_cpuid_entry2> entries);
  Result<> SetMpState(uint32_t state);
  Result<kvm_lapic_state> GetLapic();
  Result<> SetLapic(const kvm_lapic_state& lapic);
  // Queue an external interrupt (split irqchip: an ExtINT, accepted while LVT0 is ExtINT).
  Result<> Interrupt(uint32_t vector);
  Result<uint64_t> GetMsr(uint32_t index);
  // KVM_GET_TSC_KHZ: the guest TSC frequency.
  Result<uint32_t> TscKhz();
  Result<> SetMsr(uint32_t index, uint64_t value);

  // Any other vCPU ioctl taking a struct (kvm/vcpu_snapshot.cc's KVM_GET_*/SET_* calls).
  Result<> Ioctl(unsigned long request, void* arg, const char* what);

  // KVM_CAP_SYNC_REGS: have KVM_RUN publish regs+sregs in run()->s.regs on every exit.
  void EnableSyncRegs();
  // After changing run()->s.regs.regs, tell KVM to load it on the next entry.
  void MarkRegsDirty() { run_->kvm_dirty_regs |= KVM_SYNC_X86_REGS; }

  // Record the calling thread as this vCPU's owner (the target of Kick()).
  void BindToCurrentThread();
  // Any thread: make the owner leave (or not enter) KVM_RUN soon.
  void Kick();
  // Owner thread: clear a kick before re-checking its requests and entering.
  void ClearImmediateExit();

 private:
  uint32_t id_;
  Fd fd_;
  kvm_run* run_;
  size_t run_size_;
  std::atomic<pthread_t> owner_{};
  std::atomic<bool> has_owner_{false};
};

}  // namespace xenkvm::kvm
