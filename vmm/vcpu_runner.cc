// vCPU thread and exit decoding; see vcpu_runner.h.
#include "vmm/vcpu_runner.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include "abi/platform.h"
#include "trace/histogram.h"
#include "trace/trace.h"
#include "vmm/hypercall_regs.h"
#include "vmm/timers.h"
#include "vmm/x86_state.h"

namespace xenkvm::vmm {

namespace {
constexpr uint32_t kMsrIa32Tsc = 0x10;
constexpr auto kParkPollSlice = std::chrono::milliseconds(100);
// The longest guest TSC reading RefreshClock pairs with the host clock (its error is half this).
constexpr uint64_t kMaxClockSampleNs = 1'000'000;
// How often a vCPU's exits feed a TSC reading to the guest clock (each costs a vCPU ioctl).
constexpr uint64_t kClockSampleIntervalNs = 100'000'000;
// How long RunParked waits for a thread that started after a pause to reach its park.
constexpr auto kParkWaitForWork = std::chrono::seconds(10);

// Slice names for the trace (xen/include/public/xen.h numbering); others read "hypercall".
const char* HypercallName(uint32_t nr) {
  switch (nr) {
    case __HYPERVISOR_set_timer_op:
      return "set_timer_op";
    case __HYPERVISOR_memory_op:
      return "memory_op";
    case __HYPERVISOR_xen_version:
      return "xen_version";
    case __HYPERVISOR_console_io:
      return "console_io";
    case __HYPERVISOR_grant_table_op:
      return "grant_table_op";
    case __HYPERVISOR_vcpu_op:
      return "vcpu_op";
    case __HYPERVISOR_sched_op:
      return "sched_op";
    case __HYPERVISOR_event_channel_op:
      return "event_channel_op";
    case __HYPERVISOR_hvm_op:
      return "hvm_op";
    default:
      return "hypercall";
  }
}

MachineEnd EndWith(EndReason reason, const char* format, auto... args) {
  char line[256];
  std::snprintf(line, sizeof(line), format, args...);
  return MachineEnd{reason, 0, line};
}
}  // namespace

VcpuRunner::VcpuRunner(VcpuHost& host, UpcallInjector& injector, kvm::Vcpu vcpu,
                       kvm::PioExitRip pio_exit_rip)
    : host_(host),
      injector_(injector),
      vcpu_(std::move(vcpu)),
      id_(vcpu_.id()),
      pio_exit_rip_(pio_exit_rip),
      state_(id_ == 0 ? VcpuState::kUp : VcpuState::kOffline) {}

VcpuRunner::~VcpuRunner() { Join(); }

void VcpuRunner::StartThread() {
  {
    MutexLock lock(wake_mutex_);
    started_ = true;
  }
  thread_ = std::thread([this] { ThreadMain(); });
}

void VcpuRunner::Join() {
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------- requests (any thread)

void VcpuRunner::Request(uint32_t bits) {
  requests_.Make(bits);
  if (!OnOwnThread()) vcpu_.Kick();  // the kick sets immediate_exit: a request can't be missed
  Wake();                            // a vCPU sleeping in SCHEDOP_block/poll
}

void VcpuRunner::Wake() {
  if (trace::Recorder* t = trace::Active()) [[unlikely]]
    t->Instant("wake", {"vcpu", id_});
  {
    MutexLock lock(wake_mutex_);
    ++wake_seq_;
  }
  wake_cv_.notify_all();
}

uint64_t VcpuRunner::WakeSeq() {
  // Sync requests may arrive while the vCPU sleeps in a hypercall: fold them in here so the
  // caller's pending check sees them.
  if (requests_.Check(kRequestSyncEvents)) host_.SyncEvents(id_);
  MutexLock lock(wake_mutex_);
  return wake_seq_;
}

void VcpuRunner::Sleep(uint64_t seq, uint64_t deadline_ns) {
  trace::Recorder* const t = trace::Active();
  const uint64_t start = t ? trace::NowNs() : 0;
  struct Traced {  // the slice ends however the wait ends
    trace::Recorder* t;
    uint64_t start;
    bool timed;
    ~Traced() {
      if (t) [[unlikely]]
        t->Slice("blocked", start, {"timeout", timed ? 1 : 0});
    }
  } traced{t, start, deadline_ns != 0};
  MutexLock lock(wake_mutex_);
  while (!host_.Stopping()) {
    if (pause_requested_) {
      ParkLocked(lock);  // the deadline is system time: a timeout passed meanwhile ends it next
      continue;
    }
    if (wake_seq_ != seq) break;
    if (deadline_ns == 0) {
      wake_cv_.wait(lock.native());
    } else {
      const uint64_t now = host_.SystemTimeNs();
      if (now >= deadline_ns) break;
      wake_cv_.wait_for(lock.native(), WaitSlice(deadline_ns - now));  // bounded: no overflow
    }
  }
}

// ---------------------------------------------------------------- lifecycle (any thread)

Result<> VcpuRunner::Initialise(const vcpu_hvm_context& context) {
  MutexLock lock(wake_mutex_);
  // Like Xen, a vCPU is initialised once (a downed one resumes with VCPUOP_up).
  if (state_.load() != VcpuState::kOffline) return Fail(XEN_EEXIST, "vcpu already initialised");
  context_ = context;
  state_.store(VcpuState::kDown, std::memory_order_release);
  return {};
}

Result<> VcpuRunner::StartWaitingForSipi() {
  MutexLock lock(wake_mutex_);
  if (id_ == 0 || started_) return Fail(XEN_EINVAL, "only an AP not yet running waits for SIPI");
  wait_for_sipi_ = true;
  state_.store(VcpuState::kUp, std::memory_order_release);
  return {};
}

Result<> VcpuRunner::Up() {
  {
    MutexLock lock(wake_mutex_);
    if (state_.load() == VcpuState::kOffline) return Fail(XEN_EINVAL, "vcpu not initialised");
    state_.store(VcpuState::kUp, std::memory_order_release);
    ++wake_seq_;
  }
  wake_cv_.notify_all();
  return {};
}

void VcpuRunner::RestoreLifecycle(VcpuState state) {
  MutexLock lock(wake_mutex_);
  state_.store(state, std::memory_order_release);
}

void VcpuRunner::Down() {
  {
    // Down at once as far as VCPUOP_is_up can tell; the thread parks at its next exit.
    MutexLock lock(wake_mutex_);
    if (state_.load() == VcpuState::kUp) state_.store(VcpuState::kDown, std::memory_order_release);
  }
  if (!OnOwnThread()) vcpu_.Kick();
}

bool VcpuRunner::WaitUntilUp() {
  MutexLock lock(wake_mutex_);
  while ((state_.load() != VcpuState::kUp || pause_requested_) && !host_.Stopping()) {
    if (pause_requested_) {
      ParkLocked(lock);
    } else {
      wake_cv_.wait(lock.native());
    }
  }
  return !host_.Stopping();
}

// ---------------------------------------------------------------- pause

void VcpuRunner::RequestPause() {
  {
    MutexLock lock(wake_mutex_);
    pause_requested_ = true;
  }
  wake_cv_.notify_all();  // a sleeper parks where it is (no wake_seq_ change: no early return)
  requests_.Make(kRequestPause);
  vcpu_.Kick();
}

bool VcpuRunner::WaitParked(std::chrono::steady_clock::time_point deadline) {
  MutexLock lock(wake_mutex_);
  for (;;) {
    if (parked_ || exited_ || !started_) return true;
    if (host_.Stopping()) return false;
    // Bounded slices: Stop() wakes wake_cv_, but a missed notify costs at most one slice.
    const auto slice = std::min(deadline, std::chrono::steady_clock::now() + kParkPollSlice);
    if (wake_cv_.wait_until(lock.native(), slice) == std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= deadline)
      return parked_ || exited_;
  }
}

Result<> VcpuRunner::RunParked(const std::function<Result<>(kvm::Vcpu&)>& work) {
  MutexLock lock(wake_mutex_);
  // A vCPU whose thread has not started (StartThread waits for this lock) or has gone has no
  // owner in KVM_RUN: the work runs here.
  if (!started_ || exited_) return work(vcpu_);
  // A thread started after the pause was asked for parks at its first entry: wait for it.
  const auto deadline = std::chrono::steady_clock::now() + kParkWaitForWork;
  while (!parked_ && !exited_ && !host_.Stopping() &&
         wake_cv_.wait_until(lock.native(), deadline) != std::cv_status::timeout) {
  }
  if (exited_) return work(vcpu_);
  if (!parked_) return Fail(XEN_EAGAIN, "vCPU not parked");
  parked_work_ = &work;
  parked_result_.reset();
  wake_cv_.notify_all();
  while (!parked_result_ && parked_) wake_cv_.wait(lock.native());
  parked_work_ = nullptr;
  if (!parked_result_) return Fail(XEN_EAGAIN, "vCPU left its park (the run is ending)");
  Result<> result = std::move(*parked_result_);
  parked_result_.reset();
  return result;
}

void VcpuRunner::ResumeParked() {
  {
    MutexLock lock(wake_mutex_);
    pause_requested_ = false;
  }
  wake_cv_.notify_all();
}

void VcpuRunner::ParkLocked(MutexLock& lock) {
  parked_ = true;
  wake_cv_.notify_all();
  while (pause_requested_ && !host_.Stopping()) {
    if (parked_work_ != nullptr && !parked_result_) {
      const auto* work = parked_work_;
      lock.native().unlock();
      Result<> result = (*work)(vcpu_);
      lock.native().lock();
      parked_result_ = std::move(result);
      wake_cv_.notify_all();
      continue;
    }
    wake_cv_.wait(lock.native());
  }
  parked_ = false;
  wake_cv_.notify_all();  // a RunParked caller waiting on us sees the park end
}

void VcpuRunner::FlushExit() {
  vcpu_.Kick();  // sets immediate_exit (the signal to ourselves is a no-op)
  if (auto r = vcpu_.Run(); !r) StopWithError("completing the last exit before a pause", r.error());
}

void VcpuRunner::NoteExited() {
  {
    MutexLock lock(wake_mutex_);
    exited_ = true;
  }
  wake_cv_.notify_all();
}

void VcpuRunner::RefreshClock() {
  // Xen refreshes each vCPU's vcpu_time_info when it is scheduled and every second. We feed the
  // guest clock a reading of this vCPU's TSC at most every kClockSampleIntervalNs of exits; it
  // decides whether the pvclock pair moves (GuestClock::Sample says why not every reading does).
  const uint64_t before = host_.ClockMonotonicNs();
  if (clock_sampled_ns_ != 0 && before - clock_sampled_ns_ < kClockSampleIntervalNs) return;
  auto tsc = vcpu_.GetMsr(kMsrIa32Tsc);
  if (!tsc) return;
  const uint64_t after = host_.ClockMonotonicNs();
  // A thread preempted around the reading (often, in a nested VM) would pair the TSC with the
  // wrong time: such a reading is dropped, the next exit retries.
  if (after - before > kMaxClockSampleNs) return;
  clock_sampled_ns_ = after;
  host_.SampleClock(id_, *tsc, before + (after - before) / 2);
}

PagingState VcpuRunner::Paging() const {
  const kvm_sregs& s = vcpu_.run()->s.regs.sregs;
  return PagingState{s.cr0, s.cr3, s.cr4, s.efer};
}

// ---------------------------------------------------------------- start state (own thread)

Result<> VcpuRunner::ApplyBootState() {
  const BootEntry boot = host_.Boot();
  const X86State st = PvhBootState(TRY(vcpu_.GetSregs()), boot.entry, boot.start_info_gpa);
  TRY(vcpu_.SetSregs(st.sregs));
  TRY(vcpu_.SetRegs(st.regs));
  // pvclock: a first pairing of the guest TSC with the host clock at KVM's stated rate. KVM
  // may still move the guest TSC when the vCPU first runs; RefreshClock() re-anchors then.
  const uint64_t tsc = TRY(vcpu_.GetMsr(kMsrIa32Tsc));
  const auto khz = vcpu_.TscKhz();
  host_.CalibrateClock(id_, tsc, khz ? *khz : 0);
  return {};
}

Result<> VcpuRunner::ApplyContext(const vcpu_hvm_context& context) {
  const X86State st = StateFromHvmContext(TRY(vcpu_.GetSregs()), context);
  TRY(vcpu_.SetSregs(st.sregs));
  TRY(vcpu_.SetRegs(st.regs));
  // This vCPU's first pvclock pair, from its own TSC (its first exit settles it).
  host_.CalibrateClock(id_, TRY(vcpu_.GetMsr(kMsrIa32Tsc)), 0);
  return vcpu_.SetMpState(KVM_MP_STATE_RUNNABLE);
}

// KVM gives an AP this state at creation when the LAPIC is in the kernel; set here so the
// choice is ours, not a default. KVM_RUN then blocks in the kernel until the LAPIC takes an
// INIT and a SIPI (a kick still gets us out: KVM_EXIT_INTR).
Result<> VcpuRunner::ApplyWaitForSipi() {
  TRY(vcpu_.SetMpState(KVM_MP_STATE_UNINITIALIZED));
  host_.CalibrateClock(id_, TRY(vcpu_.GetMsr(kMsrIa32Tsc)), 0);
  return {};
}

void VcpuRunner::StopWithError(const char* what, const Error& error) {
  host_.Stop(EndWith(EndReason::kHostError, "vCPU %u: %s: %s", id_, what, Describe(error).c_str()));
}

// ---------------------------------------------------------------- the loop (own thread)

void VcpuRunner::ThreadMain() {
  struct Finished {  // tell the host (and a pause) this thread is gone, however it leaves
    VcpuRunner& runner;
    ~Finished() {
      runner.NoteExited();
      runner.host_.VcpuThreadFinished(runner.id_);
    }
  } finished{*this};
  thread_id_.store(std::this_thread::get_id(), std::memory_order_release);
  if (trace::Recorder* t = trace::Active()) t->NameThread("vCPU " + std::to_string(id_));
  vcpu_.BindToCurrentThread();
  {
    auto cpuid = host_.Cpuid(id_);
    if (!cpuid) return StopWithError("CPUID setup", cpuid.error());
    if (auto r = vcpu_.SetCpuid(*cpuid); !r) return StopWithError("CPUID setup", r.error());
  }
  vcpu_.EnableSyncRegs();
  if (id_ == 0) {
    if (auto r = ApplyBootState(); !r) return StopWithError("boot state", r.error());
  } else if (wait_for_sipi_) {
    if (auto r = ApplyWaitForSipi(); !r) return StopWithError("wait-for-SIPI state", r.error());
  }
  while (!host_.Stopping()) {
    if (state_.load(std::memory_order_acquire) != VcpuState::kUp) {
      host_.NoteRunstate(id_, RUNSTATE_offline);
      if (!WaitUntilUp()) break;
      host_.NoteRunstate(id_, RUNSTATE_running);
    }
    std::optional<vcpu_hvm_context> context;
    {
      MutexLock lock(wake_mutex_);
      context.swap(context_);
    }
    if (context) {
      if (auto r = ApplyContext(*context); !r) {
        // The guest's own bad register state (KVM refused it): this vCPU stays down, the VM
        // goes on, as if VCPUOP_initialise had failed.
        std::fprintf(stderr,
                     "xenkvm: vCPU %u: VCPUOP_initialise state refused (%s); vCPU stays down\n",
                     id_, Describe(r.error()).c_str());
        MutexLock lock(wake_mutex_);
        state_.store(VcpuState::kOffline, std::memory_order_release);
        continue;
      }
      injector_.OnVcpuReset(id_);
    }
    vcpu_.ClearImmediateExit();
    // Requests made after this point kick (immediate_exit), so none waits a whole guest run.
    const uint32_t requests = requests_.TakeAll();
    if (requests & kRequestPause) {
      FlushExit();
      MutexLock lock(wake_mutex_);
      if (pause_requested_) ParkLocked(lock);
      if (host_.Stopping()) break;
      // The other requests taken with this one are still done below; a pause requested again
      // after the resume kicked (immediate_exit), so it is seen at the next iteration.
    }
    if (requests & kRequestSyncEvents) host_.SyncEvents(id_);
    injector_.BeforeEntry(id_, vcpu_, requests);
    if (auto r = vcpu_.Run(); !r) return StopWithError("guest entry", r.error());
    HandleExit();
  }
}

void VcpuRunner::HandleExit() {
  RefreshClock();
  kvm_run* run = vcpu_.run();
  const auto rip = static_cast<unsigned long long>(run->s.regs.regs.rip);
  switch (run->exit_reason) {
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
    case KVM_EXIT_HLT:
      return;
    case KVM_EXIT_IO:
      return HandleIo();
    case KVM_EXIT_XEN:
      return HandleXenExit();
    case KVM_EXIT_X86_WRMSR:
      if (run->msr.index == XENKVM_HYPERCALL_PAGE_MSR) {
        {
          // Xen latches the shared_info layout here (hvm_init_hypercall_page): 32-bit callers
          // get the compat layout.
          const bool compat = IsCompatMode(run->s.regs.sregs);
          // 1 = #GP, as Xen gives for a bad page.
          run->msr.error = host_.WriteHypercallPage(run->msr.data, compat) ? 0 : 1;
        }
      } else {
        run->msr.error = 1;
      }
      return;
    case KVM_EXIT_X86_RDMSR:
      run->msr.data = 0;
      run->msr.error = run->msr.index == XENKVM_HYPERCALL_PAGE_MSR ? 0 : 1;
      return;
    case KVM_EXIT_MMIO: {
      const size_t len = std::min<size_t>(run->mmio.len, sizeof(run->mmio.data));
      if (host_.Mmio(run->mmio.phys_addr, std::span<uint8_t>(run->mmio.data, len),
                     run->mmio.is_write))
        return;
      // No device there; reads see all-ones like an empty bus.
      if (!run->mmio.is_write) std::memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
      static std::atomic<bool> logged{false};
      if (!logged.exchange(true)) {
        std::fprintf(stderr, "xenkvm: vCPU %u: MMIO %s at %#" PRIx64 " ignored (logged once)\n",
                     id_, run->mmio.is_write ? "write" : "read",
                     static_cast<uint64_t>(run->mmio.phys_addr));
      }
      return;
    }
    case KVM_EXIT_SHUTDOWN:
      return host_.Stop(
          EndWith(EndReason::kTripleFault, "vCPU %u: triple fault at rip %#llx", id_, rip));
    case KVM_EXIT_INTERNAL_ERROR:
      return host_.Stop(
          EndWith(EndReason::kInternalError,
                  "vCPU %u: KVM internal error (suberror %u, emulation failure?) at rip %#llx", id_,
                  run->internal.suberror, rip));
    case KVM_EXIT_FAIL_ENTRY:
      return host_.Stop(
          EndWith(EndReason::kInternalError, "vCPU %u: VM entry failed (reason %#llx)", id_,
                  static_cast<unsigned long long>(run->fail_entry.hardware_entry_failure_reason)));
    case KVM_EXIT_SYSTEM_EVENT:
      if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
        return host_.Stop(GuestShutdownEnd(SHUTDOWN_reboot));
      if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN)
        return host_.Stop(GuestShutdownEnd(SHUTDOWN_poweroff));
      return host_.Stop(GuestShutdownEnd(SHUTDOWN_crash));
    default:
      return host_.Stop(EndWith(EndReason::kInternalError, "vCPU %u: unexpected KVM exit %u", id_,
                                run->exit_reason));
  }
}

void VcpuRunner::HandleIo() {
  kvm_run* run = vcpu_.run();
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  const bool out = run->io.direction == KVM_EXIT_IO_OUT;
  const uint16_t port = run->io.port;
  if (out && port == XENKVM_HYPERCALL_PORT && run->io.size == 4 && run->io.count == 1) {
    // The trap is `out %eax,$imm8` (2 bytes: abi/platform.h). A stub of the hypercall page
    // names the number by its slot; an inline `out` (no page) passes it in eax.
    const uint64_t out_rip = HypercallTrapRip(run->s.regs.regs.rip, pio_exit_rip_);
    if (const int slot = StubSlot(out_rip); slot >= 0)
      return HandleStubHypercall(uint32_t(slot), out_rip);
    uint32_t nr;
    std::memcpy(&nr, data, 4);
    return HandleHypercall(nr, out_rip);
  }
  if (out && port == XENKVM_STAGE_PORT && run->io.size == 4) {
    uint32_t stage;
    std::memcpy(&stage, data, 4);
    return host_.NoteStage(id_, stage);
  }
  if (port == XENKVM_DEBUGCON_PORT && run->io.size == 1) {
    if (out) {
      for (uint32_t i = 0; i < run->io.count; ++i) host_.DebugconWrite(data[i]);
    } else {
      std::memset(data, XENKVM_DEBUGCON_PORT, run->io.count);  // Bochs' presence check reads 0xe9
    }
    return;
  }
  if (port == XENKVM_ACPI_SLEEP_PORT || port == XENKVM_ACPI_RESET_PORT) {
    if (!out) {
      std::memset(data, 0, size_t{run->io.size} * run->io.count);
      return;
    }
    const uint8_t value = data[0];
    if (port == XENKVM_ACPI_SLEEP_PORT &&
        value == (XENKVM_ACPI_SLP_EN | XENKVM_ACPI_SLP_TYP_S5 << 2))
      return host_.Stop(GuestShutdownEnd(SHUTDOWN_poweroff));
    if (port == XENKVM_ACPI_RESET_PORT && value == XENKVM_ACPI_RESET_VALUE)
      return host_.Stop(GuestShutdownEnd(SHUTDOWN_reboot));
    return;  // other sleep states (S1-S4) are not offered: ignored, as without a device
  }
  // No other devices: reads float high, writes vanish.
  if (!out) std::memset(data, 0xff, size_t{run->io.size} * run->io.count);
}

int VcpuRunner::StubSlot(uint64_t out_rip) {
  auto gpa = host_.TranslateGva(id_, out_rip, xen::Access::kFetch);
  return gpa ? host_.HypercallSlot(*gpa) : -1;
}

// A stub trapped: run the hypercall, then its `ret` here (one exit, no guest instruction after
// the trap). Hardware KVM skips the `out` on re-entry only if rip still points at it, and PVM
// has already moved past it, so moving rip is all it takes on both. If the return address
// can't be read, the guest runs the stub's own `ret` (the next instruction on both).
void VcpuRunner::HandleStubHypercall(uint32_t nr, uint64_t out_rip) {
  kvm_regs& regs = vcpu_.run()->s.regs.regs;
  const kvm_sregs& sregs = vcpu_.run()->s.regs.sregs;
  const ReturnSlot slot = StubReturnSlot(regs, sregs);
  std::optional<uint64_t> return_address;
  // Within one page (an aligned stack never straddles): one translation.
  if ((slot.gva & 0xfff) + slot.size <= 4096) {
    if (auto gpa = host_.TranslateGva(id_, slot.gva, xen::Access::kRead)) {
      uint64_t value = 0;
      if (host_.ReadGuest(*gpa, std::as_writable_bytes(std::span(&value, 1)).first(slot.size)))
        return_address = value;
    }
  }
  HandleHypercall(nr, out_rip);
  if (return_address) CompleteStubReturn(regs, sregs, *return_address);
}

// The hypercall trapped with its number known, arguments in registers.
void VcpuRunner::HandleHypercall(uint32_t nr, uint64_t out_rip) {
  kvm_regs& regs = vcpu_.run()->s.regs.regs;
  const xen::HypercallCall call = DecodeHypercall(id_, nr, regs, vcpu_.run()->s.regs.sregs);
  regs.rax = EncodeHypercallResult(call.compat, RunHypercall(call, out_rip));
  vcpu_.MarkRegsDirty();
}

// The host kernel intercepted a vmcall/vmmcall (kvm/vm.h InterceptXenHypercalls) and decoded
// it; the result goes back through the exit, not the registers (hypercall_regs.h). rip is
// still the instruction's until the next KVM_RUN completes it, so a snapshot re-runs it.
void VcpuRunner::HandleXenExit() {
  kvm_xen_exit& exit = vcpu_.run()->xen;
  if (exit.type != KVM_EXIT_XEN_HCALL) {
    return host_.Stop(
        EndWith(EndReason::kInternalError, "vCPU %u: KVM_EXIT_XEN of type %u", id_, exit.type));
  }
  const xen::HypercallCall call = DecodeXenHypercallExit(id_, exit);
  CompleteXenHypercallExit(exit, call.compat, RunHypercall(call, vcpu_.run()->s.regs.regs.rip));
}

long VcpuRunner::RunHypercall(const xen::HypercallCall& call, uint64_t trap_rip) {
  hypercall_out_rip_ = trap_rip;
  struct Done {  // however the call returns
    std::optional<uint64_t>& in_flight;
    ~Done() { in_flight.reset(); }
  } done{hypercall_out_rip_};
  trace::Recorder* const t = trace::Active();
  trace::Stats* const stats = trace::ActiveStats();
  if (!t && !stats) [[likely]]
    return host_.Hypercall(call);
  const uint64_t start = trace::NowNs();
  trace::SetHypercallStart(start);
  const long result = host_.Hypercall(call);
  trace::SetHypercallStart(0);
  if (stats) stats->hypercall.Record(trace::NowNs() - start);
  const auto nr = static_cast<uint32_t>(std::min<uint64_t>(call.nr, UINT32_MAX));
  if (t) t->Slice(HypercallName(nr), start, {"nr", nr}, {"result", result});
  return result;
}

}  // namespace xenkvm::vmm
