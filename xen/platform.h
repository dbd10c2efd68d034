// What the Xen hypercall layer needs from the VMM that runs the guest: the mechanism under
// Xen's policy (vCPU lifecycle, upcall routing, timers, waiting, console, address translation).
// The xen/ layer holds Xen's state and semantics; vmm/ implements this with KVM, tests fake it.
#pragma once

#include <cstdint>
#include <span>

#include "abi/result.h"
#include "abi/xen.h"

extern "C" {
#include <xen/hvm/hvm_vcpu.h>
}

namespace xenkvm::xen {

// One e820 entry as XENMEM_memory_map and hvm_start_info report them (the guest's layout).
struct MemoryMapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // XEN_HVM_MEMMAP_TYPE_* (= e820 types)
} __attribute__((packed));
static_assert(sizeof(MemoryMapEntry) == 20);

// What a guest-memory access through a guest-virtual address does (checked against the page
// tables' permissions like the CPU would: Xen's PFEC_write_access / PFEC_insn_fetch).
enum class Access : uint8_t { kRead, kWrite, kFetch };

// Threads: methods taking a `vcpu` argument named "calling" are called on that vCPU's own
// thread (the one handling its hypercall); all others from any vCPU thread. None may call back
// into xen::Domain.
class Platform {
 public:
  virtual ~Platform() = default;

  virtual uint32_t VcpuCount() const = 0;

  // ---- guest memory as the calling vCPU sees it ----
  // Guest-virtual -> guest-physical through the calling vCPU's paging mode, for a supervisor
  // access of this kind; -EFAULT if unmapped or not permitted (e.g. a write to a read-only page).
  virtual Result<uint64_t> TranslateGva(uint32_t calling_vcpu, uint64_t gva, Access access) = 0;
  virtual std::span<const MemoryMapEntry> MemoryMap() const = 0;
  virtual uint64_t RamPages() const = 0;
  // Hand the host memory behind guest RAM [gpa, gpa + size) back (the guest ballooned it out);
  // page aligned, inside RAM (checked by the caller). The range stays mapped and reads as zeros
  // afterwards, where Xen's p2m would have no page at all.
  virtual void ReleaseRam(uint64_t gpa, uint64_t size) = 0;
  // Xen's own pages (shared_info, grant frames, console and xenstore rings) at gfns outside
  // RAM: back gfn with a fresh zeroed host page, visible to the guest and in the GuestMemory at
  // gfn << 12 (a memslot made on demand). The caller (xen::Domain) checked gfn is not RAM and
  // not already mapped; -ENOMEM/-ENOSPC if the host has no page or slot left.
  virtual Result<> MapSpecialPage(uint64_t gfn) = 0;
  // Remove that page (its contents are gone; the gfn is a hole again). Waits until no thread
  // still uses a translation into it.
  virtual void UnmapSpecialPage(uint64_t gfn) = 0;

  // ---- console (CONSOLEIO_*) ----
  virtual void ConsoleWrite(std::span<const char> bytes) = 0;
  // Non-blocking; returns how many bytes were read.
  virtual size_t ConsoleRead(std::span<char> out) = 0;

  // ---- lifecycle ----
  // SHUTDOWN_* reason; every vCPU stops soon after.
  virtual void Shutdown(uint32_t reason) = 0;
  virtual bool Stopping() const = 0;
  // VCPUOP_initialise/up/down/is_up on vCPU `target` (validated < VcpuCount()).
  virtual Result<> InitialiseVcpu(uint32_t target, const vcpu_hvm_context& context) = 0;
  virtual Result<> UpVcpu(uint32_t target) = 0;
  virtual Result<> DownVcpu(uint32_t target) = 0;
  virtual bool VcpuIsUp(uint32_t target) const = 0;

  // ---- upcall routing (how evtchn_upcall_pending reaches a vCPU) ----
  // Per-vCPU vector (HVMOP_set_evtchn_upcall_vector); 0 = none. Re-raises if pending.
  virtual void SetUpcallVector(uint32_t target, uint8_t vector) = 0;
  // Global callback vector (HVM_PARAM_CALLBACK_IRQ type 2); 0 = none. Re-raises if pending.
  virtual void SetCallbackVector(uint8_t vector) = 0;
  // Deliver the upcall now if evtchn_upcall_pending is set (e.g. after vcpu_info moved).
  virtual void RaiseUpcall(uint32_t target) = 0;

  // ---- time ----
  // Xen system time: nanoseconds since the domain started (what vcpu_time_info extrapolates).
  virtual uint64_t SystemTimeNs() const = 0;
  // Wall clock at system time 0 (for shared_info.wc_*).
  virtual void BootWallclock(uint64_t* sec, uint32_t* nsec) const = 0;
  // Per-vCPU single-shot timer raising VIRQ_TIMER at `deadline_ns` (system time), repeating
  // every period_ns if non-zero. deadline_ns == 0 stops it.
  virtual void SetTimer(uint32_t target, uint64_t deadline_ns, uint64_t period_ns) = 0;
  // Fill a vcpu_time_info for this vCPU (pvclock: system time from the guest TSC).
  virtual Result<vcpu_time_info> VcpuTime(uint32_t target) = 0;

  // ---- waiting (SCHEDOP_block / SCHEDOP_poll), race-free with WakeSeq ----
  // Read WakeSeq, test the condition, then Sleep(seq): Sleep returns at once if any wake-up
  // (upcall, poll wake, kick, shutdown) happened since WakeSeq, else at the next one or at
  // deadline_ns (system time; 0 = none).
  virtual uint64_t WakeSeq(uint32_t calling_vcpu) = 0;
  virtual void Sleep(uint32_t calling_vcpu, uint64_t seq, uint64_t deadline_ns) = 0;
  virtual void Yield(uint32_t calling_vcpu) = 0;
};

}  // namespace xenkvm::xen
