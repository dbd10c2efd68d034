// One vCPU's thread: owns the KVM vCPU fd and kvm_run, applies its start state (x86_state.h),
// enters the guest and decodes exits (hypercall port I/O, KVM_EXIT_XEN hypercalls, debugcon,
// stage marker, hypercall-page MSR). It is the engine's evtchn::VcpuSink and the UpcallInjector's
// Target for this vCPU; the injector decides how upcalls go in (docs/upcalls.md).
//
// Requests from other threads are bits in requests_ (vcpu_requests.h) followed by one
// kick-and-wake (Request). The lifecycle is `state_`; VCPUOP_initialise's context waits in
// context_ for the thread to apply it.
//
// Pause (docs/control.md): RequestPause makes the thread park at the next point where it is out
// of KVM_RUN with the guest's state complete: before entering (after flushing the last exit
// into KVM), inside SCHEDOP_block/poll's wait (the hypercall not yet done: its `out` is
// re-run if the state is saved and restored), or waiting for VCPUOP_up. Parked, it runs work
// handed to it (RunParked: kvm::Vcpu calls belong on the owning thread) until ResumeParked.
//
// Threads: ThreadMain on the owned thread; the sink methods, Request, Initialise/Up/Down,
// Wake/Kick and the pause methods from any thread. Lock: wake_mutex_ guards the sleep
// sequence, the pending context and the pause state, and orders lifecycle changes against
// WaitUntilUp; it is a leaf (parked work runs without it).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <optional>
#include <thread>

#include "abi/result.h"
#include "abi/sync.h"
#include "evtchn/engine.h"
#include "kvm/pio_exit_probe.h"
#include "kvm/vcpu.h"
#include "vmm/page_walk.h"
#include "vmm/upcall_injector.h"
#include "vmm/vcpu_host.h"
#include "vmm/vcpu_requests.h"

namespace xenkvm::vmm {

// VCPUOP lifecycle: kOffline until VCPUOP_initialise (vCPU0 starts up), kDown after
// VCPUOP_down, kUp while it runs. A refused initial state sends it back to kOffline.
enum class VcpuState : uint8_t { kOffline, kDown, kUp };

class VcpuRunner final : public evtchn::VcpuSink, public UpcallInjector::Target {
 public:
  // `pio_exit_rip`: where this KVM leaves rip at a port-I/O exit (kvm::ProbePioExitRip).
  VcpuRunner(VcpuHost& host, UpcallInjector& injector, kvm::Vcpu vcpu,
             kvm::PioExitRip pio_exit_rip);
  ~VcpuRunner() override;

  uint32_t id() const { return id_; }
  void StartThread();
  void Join();

  // ---- evtchn::VcpuSink (any thread, never blocks) ----
  void InjectUpcall() override { injector_.Raise(id_); }
  void RequestSync() override { Request(kRequestSyncEvents); }
  void WakePoller() override { Wake(); }

  // ---- UpcallInjector::Target (any thread) ----
  void Request(uint32_t bits) override;
  // End a Sleep (and leave it for a stop check).
  void Wake() override;
  // Leave KVM_RUN soon.
  void Kick() { vcpu_.Kick(); }

  // ---- lifecycle (VCPUOP_*, any thread) ----
  Result<> Initialise(const vcpu_hvm_context& context);
  // ApStart::kInitSipi, before StartThread (main thread): this AP is up from the start and its
  // thread enters KVM_RUN in KVM's wait-for-SIPI state, so the guest's BSP starts it through
  // the in-kernel LAPIC (INIT, SIPI: real mode at the SIPI vector's page). VCPUOP_initialise
  // on it then fails with XEN_EEXIST, as on Xen for a running vCPU.
  Result<> StartWaitingForSipi();
  Result<> Up();
  void Down();
  bool IsUp() const { return state_.load(std::memory_order_acquire) == VcpuState::kUp; }
  // Snapshots: the lifecycle as saved, and put back while the thread is parked.
  VcpuState lifecycle() const { return state_.load(std::memory_order_acquire); }
  void RestoreLifecycle(VcpuState state);

  // ---- waiting (SCHEDOP_block/poll), on the own thread ----
  uint64_t WakeSeq();
  void Sleep(uint64_t seq, uint64_t deadline_ns);

  // Own thread: the paging state of the last exit (sync regs).
  PagingState Paging() const;
  // Own thread (parked work): while a hypercall trapped by port I/O is under way (parked in
  // SCHEDOP_block/poll), the rip of its `out`. A saved state must hold that rip so the restored
  // guest runs the hypercall again; a KVM that reports rip past the `out` (PVM) does not.
  std::optional<uint64_t> HypercallInFlightRip() const { return hypercall_out_rip_; }

  // ---- pause (any thread but this vCPU's) ----
  void RequestPause();
  // Whether the thread is parked (or gone) by `deadline`; false also when the run is ending.
  bool WaitParked(std::chrono::steady_clock::time_point deadline);
  // Runs `work` on the parked thread and returns its result (XEN_EAGAIN: not parked); for a
  // vCPU with no thread (not started, or gone) on the caller's thread.
  Result<> RunParked(const std::function<Result<>(kvm::Vcpu&)>& work);
  void ResumeParked();

 private:
  void ThreadMain();
  bool WaitUntilUp();  // false: stopping
  // Parks while a pause is requested, running handed work. The caller holds wake_mutex_.
  void ParkLocked(MutexLock& lock) XENKVM_REQUIRES(wake_mutex_);
  // Before parking at the loop top: KVM_RUN with immediate_exit set completes the last exit
  // (skips the trapped `out`, loads dirty sync regs) without entering the guest (api.rst).
  void FlushExit();
  void NoteExited();
  Result<> ApplyBootState();
  Result<> ApplyContext(const vcpu_hvm_context& context);
  Result<> ApplyWaitForSipi();
  void StopWithError(const char* what, const Error& error);
  void HandleExit();
  void RefreshClock();
  void HandleIo();
  // `out_rip`: where the trapping `out` starts (the exit's rip on hardware KVM, 2 bytes before
  // it on PVM).
  void HandleHypercall(uint32_t nr, uint64_t out_rip);
  void HandleStubHypercall(uint32_t nr, uint64_t out_rip);
  int StubSlot(uint64_t out_rip);  // the hypercall-page slot an `out` at out_rip is in, or -1
  void HandleXenExit();            // KVM_EXIT_XEN: the host's hypercall intercept
  // Dispatch with trace and --stats; `trap_rip` is where the trapping instruction starts
  // (HypercallInFlightRip while it runs).
  long RunHypercall(const xen::HypercallCall& call, uint64_t trap_rip);
  bool OnOwnThread() const {
    return std::this_thread::get_id() == thread_id_.load(std::memory_order_acquire);
  }

  VcpuHost& host_;
  UpcallInjector& injector_;
  kvm::Vcpu vcpu_;
  const uint32_t id_;
  const kvm::PioExitRip pio_exit_rip_;
  std::optional<uint64_t> hypercall_out_rip_;  // own thread: see HypercallInFlightRip
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};
  VcpuRequests requests_;
  uint64_t clock_sampled_ns_ = 0;  // own thread: host time of this vCPU's last clock reading
  bool wait_for_sipi_ = false;     // StartWaitingForSipi; set before the thread starts

  std::atomic<VcpuState> state_;  // written under wake_mutex_, read anywhere

  Mutex wake_mutex_;
  std::condition_variable wake_cv_;
  uint64_t wake_seq_ XENKVM_GUARDED_BY(wake_mutex_) = 0;
  std::optional<vcpu_hvm_context> context_ XENKVM_GUARDED_BY(wake_mutex_);  // applied on next entry
  bool pause_requested_ XENKVM_GUARDED_BY(wake_mutex_) = false;
  bool parked_ XENKVM_GUARDED_BY(wake_mutex_) = false;
  bool exited_ XENKVM_GUARDED_BY(wake_mutex_) = false;  // ThreadMain returned (or never ran)
  bool started_ XENKVM_GUARDED_BY(wake_mutex_) = false;
  // RunParked's hand-over: the work, then its result once done.
  const std::function<Result<>(kvm::Vcpu&)>* parked_work_ XENKVM_GUARDED_BY(wake_mutex_) = nullptr;
  std::optional<Result<>> parked_result_ XENKVM_GUARDED_BY(wake_mutex_);
};

}  // namespace xenkvm::vmm
