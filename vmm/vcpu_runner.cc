// vCPU thread, exit decoding and upcall injection; see vcpu_runner.h and docs/upcalls.md.
#include "vmm/vcpu_runner.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "abi/platform.h"
#include "vmm/machine.h"
#include "xen/cpuid.h"
#include "xen/hypercall_page.h"

namespace xenkvm::vmm {

namespace {
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint32_t kMsrIa32Tsc = 0x10;
constexpr uint32_t kLapicLvt0 = 0x350;
constexpr uint32_t kLvtExtInt = 0x700;  // delivery mode ExtINT, unmasked
constexpr uint64_t kMsiAddressBase = 0xfee00000ull;

kvm_segment FlatSegment(uint16_t selector, uint8_t type, bool code64) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.s = 1;
  s.g = 1;
  s.l = code64 ? 1 : 0;
  s.db = code64 ? 0 : 1;
  return s;
}

kvm_segment TssSegment(uint32_t base, uint32_t limit, uint8_t type) {
  kvm_segment s{};
  s.base = base;
  s.limit = limit;
  s.type = type;  // 11: busy TSS
  s.present = 1;
  return s;
}

// A segment from vcpu_hvm_x86_32's base/limit/ar (Xen's packed attribute format: type 3:0,
// S 4, DPL 6:5, P 7, AVL 8, L 9, D/B 10, G 11).
kvm_segment SegmentFromXen(uint32_t base, uint32_t limit, uint16_t ar) {
  kvm_segment s{};
  s.base = base;
  s.limit = limit;
  s.type = ar & 0xf;
  s.s = (ar >> 4) & 1;
  s.dpl = (ar >> 5) & 3;
  s.present = (ar >> 7) & 1;
  s.avl = (ar >> 8) & 1;
  s.l = (ar >> 9) & 1;
  s.db = (ar >> 10) & 1;
  s.g = (ar >> 11) & 1;
  s.unusable = s.present ? 0 : 1;
  return s;
}
}  // namespace

VcpuRunner::VcpuRunner(Machine& machine, kvm::Vcpu vcpu) : machine_(machine), vcpu_(std::move(vcpu)), id_(vcpu_.id()) {
  if (id_ == 0) {
    initialised_ = true;
    up_ = true;
  }
}

VcpuRunner::~VcpuRunner() { Join(); }

void VcpuRunner::StartThread() { thread_ = std::thread([this] { ThreadMain(); }); }

void VcpuRunner::Join() {
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------- upcalls (any thread)

void VcpuRunner::InjectUpcall() {
  const uint8_t vector = upcall_vector_.load(std::memory_order_acquire);
  if (vector != 0) {
    // Per-vCPU vector: a fixed, edge MSI to this vCPU's APIC id through the in-kernel LAPIC;
    // works from any thread and wakes a halted vCPU without a kick.
    auto delivered = machine_.vm().SignalMsi(kMsiAddressBase | (uint64_t{id_} << 12), vector);
    const bool dropped = delivered && !*delivered;
    msi_dropped_.store(dropped, std::memory_order_release);
    // A software-disabled LAPIC drops it; the machine retries until the guest enables it.
    if (dropped) machine_.NoteDroppedMsi();
  } else if (machine_.callback_vector() != 0) {
    // Global callback vector: an ExtINT only the vCPU's own thread may queue (KVM_INTERRUPT).
    extint_wanted_.store(true, std::memory_order_release);
    if (!OnOwnThread()) vcpu_.Kick();
  }
  Wake();  // a vCPU sleeping in SCHEDOP_block/poll
}

void VcpuRunner::RequestSync() {
  sync_wanted_.store(true, std::memory_order_release);
  if (!OnOwnThread()) vcpu_.Kick();
  Wake();
}

void VcpuRunner::SetUpcallVector(uint8_t vector) {
  upcall_vector_.store(vector, std::memory_order_release);
  // Xen re-raises at once if events are already pending.
  if (machine_.engine().UpcallPending(id_)) InjectUpcall();
}

void VcpuRunner::OnCallbackVectorChanged() {
  lvt0_fix_wanted_.store(true, std::memory_order_release);
  extint_wanted_.store(true, std::memory_order_release);  // re-check pending on entry
  if (!OnOwnThread()) vcpu_.Kick();
}

void VcpuRunner::Kick() { vcpu_.Kick(); }

void VcpuRunner::Wake() {
  {
    std::lock_guard lock(wake_mutex_);
    ++wake_seq_;
  }
  wake_cv_.notify_all();
}

uint64_t VcpuRunner::WakeSeq() {
  // Sync requests may arrive while the vCPU sleeps in a hypercall: fold them in here so the
  // caller's pending check sees them.
  if (sync_wanted_.exchange(false, std::memory_order_acq_rel)) machine_.engine().SyncVcpu(id_);
  std::lock_guard lock(wake_mutex_);
  return wake_seq_;
}

void VcpuRunner::Sleep(uint64_t seq, uint64_t deadline_ns) {
  std::unique_lock lock(wake_mutex_);
  while (wake_seq_ == seq && !machine_.Stopping()) {
    if (deadline_ns == 0) {
      wake_cv_.wait(lock);
    } else {
      const uint64_t now = machine_.SystemTimeNs();
      if (now >= deadline_ns) break;
      wake_cv_.wait_for(lock, std::chrono::nanoseconds(deadline_ns - now));
    }
  }
}

// ---------------------------------------------------------------- lifecycle

Result<> VcpuRunner::Initialise(const vcpu_hvm_context& context) {
  std::lock_guard lock(wake_mutex_);
  // Like Xen, a vCPU is initialised once (a downed one resumes with VCPUOP_up).
  if (initialised_.load()) return Fail(XEN_EEXIST, "vcpu already initialised");
  context_ = context;
  initialised_ = true;
  return {};
}

Result<> VcpuRunner::Up() {
  {
    std::lock_guard lock(wake_mutex_);
    if (!initialised_.load()) return Fail(XEN_EINVAL, "vcpu not initialised");
    down_wanted_ = false;
    up_ = true;
    ++wake_seq_;
  }
  wake_cv_.notify_all();
  return {};
}

void VcpuRunner::Down() {
  {
    // Down at once as far as VCPUOP_is_up can tell; the thread parks at its next exit.
    std::lock_guard lock(wake_mutex_);
    up_ = false;
    down_wanted_ = true;
  }
  if (!OnOwnThread()) vcpu_.Kick();
}

bool VcpuRunner::RetryDroppedMsi() {
  if (!msi_dropped_.load(std::memory_order_acquire)) return false;
  if (upcall_vector_.load(std::memory_order_acquire) == 0 || !machine_.engine().UpcallPending(id_)) {
    msi_dropped_.store(false, std::memory_order_release);
    return false;
  }
  InjectUpcall();
  return msi_dropped_.load(std::memory_order_acquire);
}

bool VcpuRunner::WaitUntilUp() {
  std::unique_lock lock(wake_mutex_);
  while (!up_.load() && !machine_.Stopping()) wake_cv_.wait(lock);
  return !machine_.Stopping();
}

void VcpuRunner::RefreshClock() {
  // Xen refreshes each vCPU's vcpu_time_info when it is scheduled and every second; we do it at
  // the first exit (KVM settles the guest TSC when a vCPU first runs) and then at least every
  // second of exits. Re-anchoring also re-measures the guest TSC's rate over that second.
  GuestClock& clock = machine_.mutable_clock();
  const uint64_t now = clock.MonotonicNs();
  if (clock_refreshed_ns_ != 0 && now - clock_refreshed_ns_ < 1'000'000'000ull) return;
  clock_refreshed_ns_ = now;
  auto tsc = vcpu_.GetMsr(kMsrIa32Tsc);
  if (!tsc) return;
  clock.Reanchor(*tsc);
  machine_.domain().RefreshVcpuTime(id_);
}

PagingState VcpuRunner::Paging() const {
  const kvm_sregs& s = vcpu_.run()->s.regs.sregs;
  return PagingState{s.cr0, s.cr3, s.cr4, s.efer};
}

// ---------------------------------------------------------------- setup (own thread)

Result<> VcpuRunner::ApplyCpuid() {
  auto supported = TRY(machine_.vm().system().SupportedCpuid());
  std::vector<kvm_cpuid_entry2> entries;
  for (kvm_cpuid_entry2 e : supported) {
    // Replace KVM's own paravirt leaves with Xen's: guests look for one hypervisor signature.
    if (e.function >= XENKVM_CPUID_BASE && e.function < XENKVM_CPUID_BASE + 0x10000) continue;
    if (e.function == 1) e.ebx = (e.ebx & 0x00ffffffu) | (id_ << 24);       // initial APIC id
    if (e.function == 0xb || e.function == 0x1f) e.edx = id_;                // x2APIC id
    entries.push_back(e);
  }
  for (uint32_t leaf = XENKVM_CPUID_BASE; leaf < XENKVM_CPUID_BASE + xen::kXenCpuidLeaves; ++leaf) {
    auto r = xen::XenCpuid(leaf, 0, id_, machine_.domain().domid());
    kvm_cpuid_entry2 e{};
    e.function = leaf;
    e.eax = r->eax;
    e.ebx = r->ebx;
    e.ecx = r->ecx;
    e.edx = r->edx;
    if (leaf == XENKVM_CPUID_BASE + 4) e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    entries.push_back(e);
  }
  return vcpu_.SetCpuid(entries);
}

// PVH entry state (Xen docs/misc/pvh.pandoc): 32-bit flat protected mode, paging off,
// ebx = hvm_start_info GPA.
Result<> VcpuRunner::ApplyBootState() {
  kvm_sregs sregs = TRY(vcpu_.GetSregs());
  sregs.cs = FlatSegment(0x10, 0xb, false);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = FlatSegment(0x18, 0x3, false);
  sregs.tr = TssSegment(0, 0x67, 11);
  sregs.cr0 = 0x11;  // PE | ET
  sregs.cr4 = 0;
  sregs.efer = 0;
  TRY(vcpu_.SetSregs(sregs));
  kvm_regs regs{};
  regs.rip = machine_.boot_entry();
  regs.rbx = machine_.boot_start_info();
  regs.rflags = 0x2;
  TRY(vcpu_.SetRegs(regs));
  // pvclock: a first pairing of the guest TSC with the host clock at KVM's stated rate. KVM
  // may still move the guest TSC when the vCPU first runs; RefreshClock() re-anchors then.
  uint64_t tsc = TRY(vcpu_.GetMsr(kMsrIa32Tsc));
  auto khz = vcpu_.TscKhz();
  machine_.mutable_clock().Calibrate(tsc, khz ? *khz : 0);
  return {};
}

// VCPUOP_initialise's vcpu_hvm_context (xen/hvm/hvm_vcpu.h).
Result<> VcpuRunner::ApplyContext(const vcpu_hvm_context& ctx) {
  kvm_sregs sregs = TRY(vcpu_.GetSregs());
  kvm_regs regs{};
  if (ctx.mode == VCPU_HVM_MODE_64B) {
    const auto& r = ctx.cpu_regs.x86_64;
    regs = kvm_regs{r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp,
                    0, 0, 0, 0, 0, 0, 0, 0, r.rip, r.rflags | 0x2};
    sregs.cr0 = r.cr0;
    sregs.cr3 = r.cr3;
    sregs.cr4 = r.cr4;
    sregs.efer = r.efer;
    sregs.cs = FlatSegment(0x08, 0xb, true);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = FlatSegment(0x10, 0x3, false);
    sregs.tr = TssSegment(0, 0x67, 11);
  } else {
    const auto& r = ctx.cpu_regs.x86_32;
    regs = kvm_regs{r.eax, r.ebx, r.ecx, r.edx, r.esi, r.edi, r.esp, r.ebp,
                    0, 0, 0, 0, 0, 0, 0, 0, r.eip, uint64_t{r.eflags} | 0x2};
    sregs.cr0 = r.cr0;
    sregs.cr3 = r.cr3;
    sregs.cr4 = r.cr4;
    sregs.efer = r.efer;
    sregs.cs = SegmentFromXen(r.cs_base, r.cs_limit, r.cs_ar);
    sregs.ds = SegmentFromXen(r.ds_base, r.ds_limit, r.ds_ar);
    sregs.es = SegmentFromXen(r.es_base, r.es_limit, r.es_ar);
    sregs.ss = SegmentFromXen(r.ss_base, r.ss_limit, r.ss_ar);
    sregs.fs = sregs.gs = sregs.ds;
    sregs.tr = SegmentFromXen(r.tr_base, r.tr_limit, r.tr_ar);
    if (!sregs.tr.present) sregs.tr = TssSegment(0, 0x67, 11);
  }
  TRY(vcpu_.SetSregs(sregs));
  TRY(vcpu_.SetRegs(regs));
  return vcpu_.SetMpState(KVM_MP_STATE_RUNNABLE);
}

// ExtINT is accepted only while LVT0 says ExtINT, unmasked; KVM sets that on vCPU0 at reset
// but masks it on the others (docs/upcalls.md).
Result<> VcpuRunner::FixLvt0() {
  kvm_lapic_state lapic = TRY(vcpu_.GetLapic());
  uint32_t lvt0 = kLvtExtInt;
  std::memcpy(&lapic.regs[kLapicLvt0], &lvt0, sizeof(lvt0));
  return vcpu_.SetLapic(lapic);
}

// ---------------------------------------------------------------- the loop (own thread)

void VcpuRunner::ThreadMain() {
  struct Finished {  // tell Machine::Run this thread is gone, however it leaves
    Machine& m;
    ~Finished() { m.VcpuThreadFinished(); }
  } finished{machine_};
  thread_id_.store(std::this_thread::get_id(), std::memory_order_release);
  vcpu_.BindToCurrentThread();
  auto fail = [&](const Error& e, const char* what) {
    char line[256];
    std::snprintf(line, sizeof(line), "vCPU %u: %s: %s (errno %d)", id_, what, e.message, e.xen_errno);
    machine_.Stop(EndReason::kHostError, line);
  };
  if (auto r = ApplyCpuid(); !r) return fail(r.error(), "CPUID setup");
  vcpu_.EnableSyncRegs();
  if (id_ == 0) {
    if (auto r = ApplyBootState(); !r) return fail(r.error(), "boot state");
  }
  while (!machine_.Stopping()) {
    if (!up_.load(std::memory_order_acquire)) {
      down_wanted_ = false;
      if (!WaitUntilUp()) break;
    }
    std::optional<vcpu_hvm_context> context;
    {
      std::lock_guard lock(wake_mutex_);
      context.swap(context_);
    }
    if (context) {
      if (auto r = ApplyContext(*context); !r) {
        // The guest's own bad register state (KVM refused it): this vCPU stays down, the VM
        // goes on, as if VCPUOP_initialise had failed.
        std::fprintf(stderr, "xenkvm: vCPU %u: VCPUOP_initialise state refused (%s, errno %d); vCPU stays down\n",
                     id_, r.error().message, r.error().xen_errno);
        std::lock_guard lock(wake_mutex_);
        up_ = false;
        initialised_ = false;
        continue;
      }
      if (machine_.callback_vector() != 0) lvt0_fix_wanted_ = true;
    }
    vcpu_.ClearImmediateExit();
    PrepareEntry();
    if (auto r = vcpu_.Run(); !r) return fail(r.error(), "KVM_RUN");
    HandleExit();
  }
}

// Everything that must happen on this thread right before KVM_RUN: deferred engine syncs,
// LVT0 fix-ups and the global-callback ExtINT (level-like: re-raised while pending).
void VcpuRunner::PrepareEntry() {
  kvm_run* run = vcpu_.run();
  if (sync_wanted_.exchange(false, std::memory_order_acq_rel)) machine_.engine().SyncVcpu(id_);
  if (lvt0_fix_wanted_.exchange(false, std::memory_order_acq_rel)) {
    if (auto r = FixLvt0(); !r) std::fprintf(stderr, "xenkvm: vCPU %u: LVT0 fix-up failed: %s\n", id_, r.error().message);
  }
  const uint8_t per_vcpu = upcall_vector_.load(std::memory_order_acquire);
  const uint8_t callback = machine_.callback_vector();
  if (per_vcpu == 0 && callback != 0) {
    const bool wanted = extint_wanted_.exchange(false, std::memory_order_acq_rel);
    if (wanted || machine_.engine().UpcallPending(id_)) {
      if (!machine_.engine().UpcallPending(id_)) {
        run->request_interrupt_window = 0;
      } else if (run->ready_for_interrupt_injection && run->if_flag) {
        (void)vcpu_.Interrupt(callback);  // -EEXIST: one is already queued, fine
        run->request_interrupt_window = 0;
      } else {
        run->request_interrupt_window = 1;
      }
    } else {
      run->request_interrupt_window = 0;
    }
  } else {
    run->request_interrupt_window = 0;
    // A vector MSI dropped by a disabled LAPIC is retried until the guest enables it.
    if (per_vcpu != 0 && msi_dropped_.load(std::memory_order_acquire) && machine_.engine().UpcallPending(id_)) {
      InjectUpcall();
    }
  }
}

void VcpuRunner::HandleExit() {
  RefreshClock();
  kvm_run* run = vcpu_.run();
  char line[256];
  switch (run->exit_reason) {
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
    case KVM_EXIT_HLT:
      return;
    case KVM_EXIT_IO:
      return HandleIo();
    case KVM_EXIT_X86_WRMSR:
      if (run->msr.index == XENKVM_HYPERCALL_PAGE_MSR) {
        auto r = xen::WriteHypercallPage(machine_.memory(), run->msr.data);
        run->msr.error = r ? 0 : 1;  // 1 = #GP, as Xen gives for a bad page
      } else {
        run->msr.error = 1;
      }
      return;
    case KVM_EXIT_X86_RDMSR:
      run->msr.data = 0;
      run->msr.error = run->msr.index == XENKVM_HYPERCALL_PAGE_MSR ? 0 : 1;
      return;
    case KVM_EXIT_MMIO: {
      // Nothing of ours lives outside RAM; reads see all-ones like an empty bus.
      if (!run->mmio.is_write) std::memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
      static std::atomic<bool> logged{false};
      if (!logged.exchange(true)) {
        std::fprintf(stderr, "xenkvm: vCPU %u: MMIO %s at %#" PRIx64 " ignored (logged once)\n", id_,
                     run->mmio.is_write ? "write" : "read", static_cast<uint64_t>(run->mmio.phys_addr));
      }
      return;
    }
    case KVM_EXIT_SHUTDOWN:
      std::snprintf(line, sizeof(line), "vCPU %u: triple fault at rip %#llx", id_,
                    static_cast<unsigned long long>(run->s.regs.regs.rip));
      return machine_.Stop(EndReason::kTripleFault, line);
    case KVM_EXIT_INTERNAL_ERROR:
      std::snprintf(line, sizeof(line), "vCPU %u: KVM internal error (suberror %u, emulation failure?) at rip %#llx", id_,
                    run->internal.suberror, static_cast<unsigned long long>(run->s.regs.regs.rip));
      return machine_.Stop(EndReason::kInternalError, line);
    case KVM_EXIT_FAIL_ENTRY:
      std::snprintf(line, sizeof(line), "vCPU %u: VM entry failed (reason %#llx)", id_,
                    static_cast<unsigned long long>(run->fail_entry.hardware_entry_failure_reason));
      return machine_.Stop(EndReason::kInternalError, line);
    case KVM_EXIT_SYSTEM_EVENT:
      if (run->system_event.type == KVM_SYSTEM_EVENT_RESET) return machine_.Shutdown(SHUTDOWN_reboot);
      if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) return machine_.Shutdown(SHUTDOWN_poweroff);
      return machine_.Shutdown(SHUTDOWN_crash);
    default:
      std::snprintf(line, sizeof(line), "vCPU %u: unexpected KVM exit %u", id_, run->exit_reason);
      return machine_.Stop(EndReason::kInternalError, line);
  }
}

void VcpuRunner::HandleIo() {
  kvm_run* run = vcpu_.run();
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  const bool out = run->io.direction == KVM_EXIT_IO_OUT;
  const uint16_t port = run->io.port;
  if (out && port == XENKVM_HYPERCALL_PORT && run->io.size == 4 && run->io.count == 1) {
    uint32_t nr;
    std::memcpy(&nr, data, 4);
    return HandleHypercall(nr);
  }
  if (out && port == XENKVM_STAGE_PORT && run->io.size == 4) {
    uint32_t stage;
    std::memcpy(&stage, data, 4);
    return machine_.NoteStage(id_, stage);
  }
  if (port == XENKVM_DEBUGCON_PORT && run->io.size == 1) {
    if (out) {
      for (uint32_t i = 0; i < run->io.count; ++i) machine_.DebugconWrite(data[i]);
    } else {
      std::memset(data, XENKVM_DEBUGCON_PORT, run->io.count);  // Bochs' presence check reads 0xe9
    }
    return;
  }
  // No other devices: reads float high, writes vanish.
  if (!out) std::memset(data, 0xff, size_t{run->io.size} * run->io.count);
}

// The hypercall page stub trapped: eax = number (the OUT's value), arguments in registers.
void VcpuRunner::HandleHypercall(uint32_t nr) {
  kvm_run* run = vcpu_.run();
  kvm_regs& regs = run->s.regs.regs;
  const kvm_sregs& sregs = run->s.regs.sregs;
  xen::HypercallCall call;
  call.vcpu = id_;
  call.nr = nr;
  call.compat = !((sregs.efer & kEferLma) && sregs.cs.l);
  call.cpl = static_cast<uint8_t>(sregs.ss.dpl);  // SS.DPL is the CPL
  if (call.compat) {
    call.args = {regs.rbx & 0xffffffffu, regs.rcx & 0xffffffffu, regs.rdx & 0xffffffffu,
                 regs.rsi & 0xffffffffu, regs.rdi & 0xffffffffu};
  } else {
    call.args = {regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8};
  }
  const long result = machine_.domain().Hypercall(call);
  regs.rax = call.compat ? static_cast<uint32_t>(result) : static_cast<uint64_t>(result);
  vcpu_.MarkRegsDirty();
}

}  // namespace xenkvm::vmm
