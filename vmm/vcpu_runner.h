// One vCPU's thread: owns the KVM vCPU fd and kvm_run, enters the guest, decodes exits
// (hypercall port I/O, debugcon, stage marker, hypercall-page MSR) and delivers upcalls. It is
// also the engine's evtchn::VcpuSink for this vCPU (docs/upcalls.md explains the two modes).
//
// Threads: ThreadMain on the owned thread; the sink methods, SetUpcallVector, RequestLvt0Fix,
// Start/Up/Down and Wake from any thread (atomics, or wake_mutex_ for the sleep state).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>

#include "abi/result.h"
#include "evtchn/engine.h"
#include "kvm/vcpu.h"
#include "vmm/page_walk.h"
#include "xen/platform.h"

namespace xenkvm::vmm {

class Machine;

class VcpuRunner final : public evtchn::VcpuSink {
 public:
  VcpuRunner(Machine& machine, kvm::Vcpu vcpu);
  ~VcpuRunner() override;

  uint32_t id() const { return id_; }
  void StartThread();
  void Join();

  // ---- evtchn::VcpuSink (any thread, never blocks) ----
  void InjectUpcall() override;
  void RequestSync() override;
  void WakePoller() override { Wake(); }

  // ---- upcall routing ----
  void SetUpcallVector(uint8_t vector);  // 0 = none (global callback or nothing)
  // Callback mode changed: make LVT0 accept ExtINT and re-raise if pending.
  void OnCallbackVectorChanged();

  // ---- lifecycle (VCPUOP_*) ----
  Result<> Initialise(const vcpu_hvm_context& context);
  Result<> Up();
  void Down();
  bool IsUp() const { return up_.load(std::memory_order_acquire); }
  // Any thread: re-send a vector MSI a disabled LAPIC dropped, if still pending. Returns
  // whether it is still dropped (the guest has not enabled its LAPIC yet).
  bool RetryDroppedMsi();

  // ---- waiting (SCHEDOP_block/poll), called on the own thread ----
  uint64_t WakeSeq();
  void Sleep(uint64_t seq, uint64_t deadline_ns);
  // Any thread: end a Sleep and leave KVM_RUN (for shutdown).
  void Wake();
  void Kick();

  // Own thread: the paging state of the last exit (sync regs).
  PagingState Paging() const;

 private:
  void ThreadMain();
  bool WaitUntilUp();  // false: stopping
  Result<> ApplyBootState();
  Result<> ApplyContext(const vcpu_hvm_context& context);
  Result<> ApplyCpuid();
  Result<> FixLvt0();
  void PrepareEntry();
  void HandleExit();
  void RefreshClock();
  void HandleIo();
  void HandleHypercall(uint32_t nr);
  bool OnOwnThread() const { return std::this_thread::get_id() == thread_id_.load(std::memory_order_acquire); }

  Machine& machine_;
  kvm::Vcpu vcpu_;
  const uint32_t id_;
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};

  std::atomic<uint8_t> upcall_vector_{0};     // per-vCPU vector; 0 = none
  std::atomic<bool> extint_wanted_{false};    // global-callback upcall to inject on entry
  std::atomic<bool> msi_dropped_{false};      // last vector MSI found the LAPIC disabled
  std::atomic<bool> sync_wanted_{false};      // Engine::SyncVcpu before the next entry
  std::atomic<bool> lvt0_fix_wanted_{false};  // set LVT0 = ExtINT before the next entry
  uint64_t clock_refreshed_ns_ = 0;  // own thread: host time of this vCPU's last RefreshClock

  // Lifecycle: context_ is written under wake_mutex_ and read by the own thread under it.
  std::atomic<bool> up_{false};
  std::atomic<bool> initialised_{false};
  std::atomic<bool> down_wanted_{false};
  std::optional<vcpu_hvm_context> context_;  // guarded by wake_mutex_; applied on next start

  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  uint64_t wake_seq_ = 0;  // guarded by wake_mutex_
};

}  // namespace xenkvm::vmm
