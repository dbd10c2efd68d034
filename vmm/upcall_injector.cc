// Upcall injection and its retry; see upcall_injector.h and docs/upcalls.md.
#include "vmm/upcall_injector.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "trace/histogram.h"
#include "trace/trace.h"
#include "vmm/vcpu_requests.h"
#include "vmm/x86_state.h"

namespace xenkvm::vmm {

namespace {
constexpr uint64_t kMsiAddressBase = 0xfee00000ull;
// GSIs of the per-vCPU upcall routes: past the 24 a split irqchip leaves to an IOAPIC.
constexpr uint32_t kUpcallGsiBase = 24;
uint64_t MsiAddress(uint32_t vcpu) { return kMsiAddressBase | (uint64_t{vcpu} << 12); }
constexpr auto kRetryPeriod = std::chrono::milliseconds(1);
}  // namespace

RaiseAction DecideRaise(uint8_t upcall_vector, uint8_t callback_vector) {
  if (upcall_vector != 0) return RaiseAction::kSendMsi;
  if (callback_vector != 0) return RaiseAction::kQueueCallback;
  return RaiseAction::kNone;
}

EntryAction DecideEntry(const EntryState& s) {
  EntryAction a;
  if (s.upcall_vector == 0 && s.callback_vector != 0) {
    // Level-like: whatever asked, the ExtINT goes in while upcall_pending is set, as soon as
    // the guest can take it; otherwise KVM exits when it can.
    if (s.upcall_pending) {
      if (s.ready_for_injection && s.if_flag) {
        a.queue_extint = true;
      } else {
        a.request_window = true;
      }
    }
  } else if (s.upcall_vector != 0 && s.msi_dropped && s.upcall_pending) {
    a.resend_msi = true;
  }
  return a;
}

RetryAction DecideRetry(bool msi_dropped, uint8_t upcall_vector, bool upcall_pending) {
  if (!msi_dropped) return RetryAction::kNothing;
  if (upcall_vector == 0 || !upcall_pending) return RetryAction::kForget;
  return RetryAction::kResend;
}

UpcallInjector::UpcallInjector(kvm::Vm& vm, evtchn::Engine& engine, uint32_t vcpus)
    : vm_(vm), engine_(engine), vcpus_(std::make_unique<PerVcpu[]>(vcpus)), count_(vcpus) {
  {
    MutexLock lock(routes_mutex_);
    routes_ = std::make_unique<Route[]>(vcpus);
  }
  retry_thread_ = std::thread([this] { RetryLoop(); });
}

UpcallInjector::~UpcallInjector() { StopRetries(); }

void UpcallInjector::StopRetries() {
  {
    MutexLock lock(retry_mutex_);
    retry_stop_ = true;
  }
  retry_cv_.notify_all();
  if (retry_thread_.joinable()) retry_thread_.join();
}

void UpcallInjector::Raise(uint32_t vcpu) {
  PerVcpu& v = vcpus_[vcpu];
  const uint8_t vector = v.upcall_vector.load(std::memory_order_acquire);
  switch (DecideRaise(vector, callback_vector())) {
    case RaiseAction::kSendMsi:
      SendMsi(vcpu, vector);
      v.target->Wake();  // a vCPU sleeping in SCHEDOP_block/poll
      return;
    case RaiseAction::kQueueCallback:
      if (trace::ActiveStats()) [[unlikely]] {
        // Timed from the raising hypercall's exit; the first raise since the last injection.
        uint64_t none = 0;
        v.raised_ns.compare_exchange_strong(none, trace::HypercallStart(),
                                            std::memory_order_relaxed);
      }
      v.target->Request(kRequestCallbackUpcall);
      return;
    case RaiseAction::kNone:
      v.target->Wake();
      return;
  }
}

// A fixed, edge MSI to the vCPU's APIC id; a software-disabled LAPIC drops it (KVM returns 0)
// and the retry thread tries again until the guest enables it.
void UpcallInjector::SendMsi(uint32_t vcpu, uint8_t vector) {
  bool dropped = false;
  bool via_irqfd = true;
  const uint64_t one = 1;
  if (const int fd = vcpus_[vcpu].irqfd.load(std::memory_order_acquire);
      fd < 0 || ::write(fd, &one, sizeof(one)) != sizeof(one)) {
    via_irqfd = false;
    auto delivered = vm_.SignalMsi(MsiAddress(vcpu), vector);
    dropped = delivered && !*delivered;
    if (delivered && *delivered && fd < 0 && !irqfd_unavailable_.load(std::memory_order_relaxed))
      WireIrqfd(vcpu, vector);
  }
  if (!dropped) {
    if (trace::Stats* stats = trace::ActiveStats(); stats && trace::HypercallStart()) [[unlikely]]
      stats->send_to_upcall.Record(trace::NowNs() - trace::HypercallStart());
  }
  if (trace::Recorder* t = trace::Active()) [[unlikely]]
    t->Instant("upcall", {"vcpu", vcpu}, {"route", 0, via_irqfd ? "irqfd" : "msi"},
               {"dropped", dropped ? 1 : 0});
  vcpus_[vcpu].msi_dropped.store(dropped, std::memory_order_release);
  if (dropped) NoteDroppedMsi();
}

void UpcallInjector::WireIrqfd(uint32_t vcpu, uint8_t vector) {
  MutexLock lock(routes_mutex_);
  PerVcpu& v = vcpus_[vcpu];
  // Another raise wired it first, or the guest moved its vector meanwhile.
  if (v.irqfd.load(std::memory_order_acquire) >= 0 ||
      v.upcall_vector.load(std::memory_order_acquire) != vector)
    return;
  Route& route = routes_[vcpu];
  const uint8_t old_vector = route.vector;
  route.vector = vector;
  Result<> r = vm_.SetMsiRoute(kUpcallGsiBase + vcpu, MsiAddress(vcpu), vector);
  if (r && !route.eventfd.valid()) {
    kvm::Fd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid())
      r = HostFail(errno, "eventfd");
    else
      r = vm_.AddIrqfd(fd.get(), kUpcallGsiBase + vcpu);
    if (r) route.eventfd = std::move(fd);
  }
  if (!r) {
    // Upcalls keep going through KVM_SIGNAL_MSI; say once why.
    route.vector = old_vector;
    if (!irqfd_unavailable_.exchange(true))
      std::fprintf(stderr, "xenkvm: upcalls stay on KVM_SIGNAL_MSI: %s\n",
                   Describe(r.error()).c_str());
    return;
  }
  v.irqfd.store(route.eventfd.get(), std::memory_order_release);
}

void UpcallInjector::SetUpcallVector(uint32_t vcpu, uint8_t vector) {
  // A new vector goes through KVM_SIGNAL_MSI again until the LAPIC has taken it once.
  vcpus_[vcpu].irqfd.store(-1, std::memory_order_release);
  vcpus_[vcpu].upcall_vector.store(vector, std::memory_order_release);
  if (engine_.UpcallPending(vcpu)) Raise(vcpu);  // Xen re-raises at once if already pending
}

void UpcallInjector::SetCallbackVector(uint8_t vector) {
  callback_vector_.store(vector, std::memory_order_release);
  for (uint32_t i = 0; i < count_; ++i)
    vcpus_[i].target->Request(kRequestFixLvt0 | kRequestCallbackUpcall);
}

void UpcallInjector::OnVcpuReset(uint32_t vcpu) {
  if (callback_vector() != 0) vcpus_[vcpu].target->Request(kRequestFixLvt0);
}

void UpcallInjector::BeforeEntry(uint32_t vcpu, kvm::Vcpu& kvm_vcpu, uint32_t requests) {
  PerVcpu& v = vcpus_[vcpu];
  kvm_run* run = kvm_vcpu.run();
  if (requests & kRequestFixLvt0) {
    auto lapic = kvm_vcpu.GetLapic();
    if (lapic) {
      SetLvt0ExtInt(&*lapic);
      if (auto r = kvm_vcpu.SetLapic(*lapic); !r) lapic = tl::unexpected(r.error());
    }
    if (!lapic)
      std::fprintf(stderr, "xenkvm: vCPU %u: LVT0 fix-up failed: %s\n", vcpu,
                   Describe(lapic.error()).c_str());
  }
  EntryState s;
  s.upcall_vector = v.upcall_vector.load(std::memory_order_acquire);
  s.callback_vector = callback_vector();
  s.msi_dropped = v.msi_dropped.load(std::memory_order_acquire);
  // upcall_pending is a read of guest memory: only when a route could act on it.
  if ((s.upcall_vector == 0 && s.callback_vector != 0) || (s.upcall_vector != 0 && s.msi_dropped)) {
    s.upcall_pending = engine_.UpcallPending(vcpu);
  }
  s.ready_for_injection = run->ready_for_interrupt_injection != 0;
  s.if_flag = run->if_flag != 0;
  const EntryAction a = DecideEntry(s);
  if (a.queue_extint) {
    (void)kvm_vcpu.Interrupt(s.callback_vector);  // -EEXIST: one is already queued
    NoteInjected(vcpu);
    if (trace::Recorder* t = trace::Active()) [[unlikely]]
      t->Instant("upcall", {"vcpu", vcpu}, {"route", 0, "extint"});
  }
  run->request_interrupt_window = a.request_window ? 1 : 0;
  if (a.resend_msi) Raise(vcpu);
}

bool UpcallInjector::RetryDroppedMsi(uint32_t vcpu) {
  PerVcpu& v = vcpus_[vcpu];
  const bool dropped = v.msi_dropped.load(std::memory_order_acquire);
  if (!dropped) return false;
  const uint8_t vector = v.upcall_vector.load(std::memory_order_acquire);
  switch (DecideRetry(dropped, vector, vector != 0 && engine_.UpcallPending(vcpu))) {
    case RetryAction::kNothing:
      return false;
    case RetryAction::kForget:
      v.msi_dropped.store(false, std::memory_order_release);
      return false;
    case RetryAction::kResend:
      Raise(vcpu);
      return v.msi_dropped.load(std::memory_order_acquire);
  }
  return false;
}

void UpcallInjector::NoteInjected(uint32_t vcpu) {
  trace::Stats* const stats = trace::ActiveStats();
  if (!stats) [[likely]]
    return;
  // ExtINT route: the raise came from another thread's hypercall (0: not from a hypercall).
  const uint64_t raised = vcpus_[vcpu].raised_ns.exchange(0, std::memory_order_relaxed);
  if (raised != 0) stats->send_to_upcall.Record(trace::NowNs() - raised);
}

void UpcallInjector::NoteDroppedMsi() {
  {
    MutexLock lock(retry_mutex_);
    retry_wanted_ = true;
  }
  retry_cv_.notify_all();
}

void UpcallInjector::RetryLoop() {
  if (trace::Recorder* t = trace::Active()) t->NameThread("upcall retry");
  MutexLock lock(retry_mutex_);
  while (!retry_stop_) {
    if (!retry_wanted_) {
      retry_cv_.wait(lock.native());
      continue;
    }
    retry_wanted_ = false;
    lock.native().unlock();
    std::this_thread::sleep_for(kRetryPeriod);
    bool again = false;
    for (uint32_t i = 0; i < count_; ++i) again |= RetryDroppedMsi(i);
    lock.native().lock();
    retry_wanted_ |= again;
  }
}

}  // namespace xenkvm::vmm
