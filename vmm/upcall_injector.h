// Every way an upcall reaches a vCPU (docs/upcalls.md), in one place:
//  - per-vCPU vector (HVMOP_set_evtchn_upcall_vector): a fixed, edge MSI to the vCPU's APIC
//    through the in-kernel LAPIC, from any thread; it wakes a halted vCPU by itself. The first
//    goes through KVM_SIGNAL_MSI, which says whether the LAPIC took it; once one was taken the
//    vCPU's vector gets a GSI route and an irqfd, and later upcalls are one eventfd write from
//    the raising thread (no ioctl). A guest that then software-disables its LAPIC loses its own
//    upcalls (they stay pending in shared_info), as it would with a device's MSI;
//  - global callback vector (HVM_PARAM_CALLBACK_IRQ, type vector): an ExtINT that only the
//    vCPU's own thread may queue (KVM_INTERRUPT), when the guest can take it, else it asks for
//    an interrupt window; re-raised at each entry while upcall_pending stays set (level-like);
//  - LVT0 = ExtINT on every vCPU once the callback vector is set (KVM masks it on APs);
//  - a vector MSI a software-disabled LAPIC dropped is re-sent every millisecond (x2APIC MSRs
//    can't be trapped, so no exit says when the guest enables its LAPIC) and at each entry.
// The decisions are pure functions (DecideRaise, DecideEntry, DecideRetry), tested without KVM.
//
// Threads: Raise, SetUpcallVector, SetCallbackVector from any thread; BeforeEntry on the
// vCPU's own thread; the retry thread. Locks, both leaves (nothing else is taken under them):
// retry_mutex_ guards the retry thread's flags; routes_mutex_ the vCPUs' routes and
// irqfds (the VM keeps the GSI table itself) (taken once per vCPU and vector, when its first MSI
// got through).
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "abi/sync.h"
#include "evtchn/engine.h"
#include "kvm/fd.h"
#include "kvm/vcpu.h"
#include "kvm/vm.h"

namespace xenkvm::vmm {

// ---- the decisions (pure) ----

enum class RaiseAction {
  kSendMsi,        // per-vCPU vector set: MSI now
  kQueueCallback,  // global callback: ask the vCPU thread to queue the ExtINT
  kNone,           // no upcall route yet: the event stays pending in shared memory
};
RaiseAction DecideRaise(uint8_t upcall_vector, uint8_t callback_vector);

struct EntryState {
  uint8_t upcall_vector = 0;         // per-vCPU vector, 0 = none
  uint8_t callback_vector = 0;       // global callback vector, 0 = none
  bool upcall_pending = false;       // vcpu_info.evtchn_upcall_pending
  bool ready_for_injection = false;  // kvm_run.ready_for_interrupt_injection
  bool if_flag = false;              // kvm_run.if_flag
  bool msi_dropped = false;          // the last vector MSI found the LAPIC disabled
};
struct EntryAction {
  bool queue_extint = false;    // KVM_INTERRUPT(callback_vector)
  bool request_window = false;  // kvm_run.request_interrupt_window
  bool resend_msi = false;      // send the vector MSI again
};
EntryAction DecideEntry(const EntryState& state);

enum class RetryAction { kNothing, kForget, kResend };
RetryAction DecideRetry(bool msi_dropped, uint8_t upcall_vector, bool upcall_pending);

// ---- the mechanism ----

class UpcallInjector {
 public:
  // A vCPU as the injector sees it.
  class Target {
   public:
    virtual ~Target() = default;
    // Set request bits (vcpu_requests.h), kick it out of KVM_RUN unless on its own thread, and
    // end a sleep in SCHEDOP_block/poll.
    virtual void Request(uint32_t bits) = 0;
    virtual void Wake() = 0;
  };

  UpcallInjector(kvm::Vm& vm, evtchn::Engine& engine, uint32_t vcpus);
  ~UpcallInjector();  // stops the retry thread
  UpcallInjector(const UpcallInjector&) = delete;
  UpcallInjector& operator=(const UpcallInjector&) = delete;

  void Attach(uint32_t vcpu, Target* target) { vcpus_[vcpu].target = target; }
  // Stop the retry thread (before the targets go away).
  void StopRetries();

  // Any thread: deliver an upcall to `vcpu` by its current route.
  void Raise(uint32_t vcpu);
  // Any thread: HVMOP_set_evtchn_upcall_vector (0 = none); re-raises if already pending.
  void SetUpcallVector(uint32_t vcpu, uint8_t vector);
  // Any thread: HVM_PARAM_CALLBACK_IRQ vector; every vCPU fixes LVT0 and re-checks pending.
  void SetCallbackVector(uint8_t vector);
  uint8_t callback_vector() const { return callback_vector_.load(std::memory_order_acquire); }
  // Own thread, after VCPUOP_initialise's state was applied: an AP needs LVT0 fixed too.
  void OnVcpuReset(uint32_t vcpu);

  // Own thread, right before KVM_RUN: LVT0 if asked, then the callback ExtINT or interrupt
  // window, or the resend of a dropped MSI. `requests` are the vCPU's taken request bits.
  void BeforeEntry(uint32_t vcpu, kvm::Vcpu& kvm_vcpu, uint32_t requests);

  // Any thread (the retry thread, tests): re-send a dropped vector MSI if still pending.
  // Returns whether it is still dropped.
  bool RetryDroppedMsi(uint32_t vcpu);

 private:
  struct PerVcpu {
    Target* target = nullptr;
    std::atomic<uint8_t> upcall_vector{0};
    std::atomic<bool> msi_dropped{false};
    std::atomic<uint64_t> raised_ns{0};  // --stats: hypercall start of a raise not yet injected
    // The eventfd whose write sends the current vector's MSI; -1 until one got through.
    std::atomic<int> irqfd{-1};
  };
  struct Route {
    kvm::Fd eventfd;     // registered as the vCPU's irqfd once created
    uint8_t vector = 0;  // the vCPU's GSI routes this vector's MSI; 0 = no route
  };
  void SendMsi(uint32_t vcpu, uint8_t vector);
  // The vector's MSI got through: route it and give the vCPU an irqfd for it.
  void WireIrqfd(uint32_t vcpu, uint8_t vector);
  void NoteDroppedMsi();
  void NoteInjected(uint32_t vcpu);  // --stats: a callback ExtINT ends send -> upcall
  void RetryLoop();

  kvm::Vm& vm_;
  evtchn::Engine& engine_;
  std::unique_ptr<PerVcpu[]> vcpus_;
  const uint32_t count_;
  std::atomic<uint8_t> callback_vector_{0};

  Mutex routes_mutex_;
  std::unique_ptr<Route[]> routes_ XENKVM_GUARDED_BY(routes_mutex_);  // one per vCPU
  std::atomic<bool> irqfd_unavailable_{false};  // routing or KVM_IRQFD failed: MSIs only

  Mutex retry_mutex_;
  std::condition_variable retry_cv_;
  bool retry_wanted_ XENKVM_GUARDED_BY(retry_mutex_) = false;
  bool retry_stop_ XENKVM_GUARDED_BY(retry_mutex_) = false;
  std::thread retry_thread_;
};

}  // namespace xenkvm::vmm
