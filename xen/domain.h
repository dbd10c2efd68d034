// One Xen HVM/PVH domain as its guest sees it through hypercalls: the hypercall dispatcher and
// the Xen-side state behind it (shared_info placement, vcpu_info registration, HVM params,
// grant-table frames, the memory reservation). Semantics and error codes follow Xen's public
// headers (xen/xen.h, memory.h, hvm/hvm_op.h, vcpu.h, sched.h, event_channel.h, grant_table.h,
// version.h, sysctl.h, domctl.h).
//
// Threads: Hypercall() on the calling vCPU's thread; every vCPU thread may be in it at once.
// Lock: mutex_ guards the state below it; it is never held while calling the Engine's
// delivery paths or Platform::Sleep (lock order: Domain::mutex_ -> Engine -> GuestMemory).
#pragma once

#include <array>
#include <cstdint>
#include <atomic>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "abi/result.h"
#include "abi/xen.h"
#include "evtchn/engine.h"
#include "mem/guest_memory.h"
#include "xen/guest_access.h"
#include "xen/platform.h"
#include "xen/reservation.h"

namespace xenkvm::xen {

// A decoded hypercall: what the trap delivered (number and the five argument registers).
struct HypercallCall {
  uint32_t vcpu = 0;  // Xen vCPU id of the caller
  uint64_t nr = 0;
  std::array<uint64_t, 5> args{};  // 64-bit: rdi rsi rdx r10 r8; compat: ebx ecx edx esi edi
  bool compat = false;             // caller runs in 32-bit mode (not in long mode)
  uint8_t cpl = 0;                 // privilege level of the caller (Xen: only CPL0 may call)
};

class Domain {
 public:
  static constexpr uint64_t kNoGpa = UINT64_MAX;
  static constexpr uint32_t kMaxGrantFrames = 64;

  struct Options {
    uint16_t domid = 1;
  };
  Domain(Platform& platform, mem::GuestMemory& memory, evtchn::Engine& engine, Options options);

  // Runs one hypercall; the return value goes to the guest's rax (0/positive or -errno).
  long Hypercall(const HypercallCall& call);

  // VMM-side parameter setup (HVM_PARAM_STORE_*, CONSOLE_*), done by the toolstack in Xen.
  void SetParamFromVmm(uint32_t index, uint64_t value);
  uint64_t Param(uint32_t index) const;
  uint64_t SharedInfoGpa() const;
  // Rewrite vcpu's vcpu_time_info from Platform::VcpuTime (the VMM re-anchored its clock), as
  // Xen does when it schedules a vCPU. No-op before the guest has a vcpu_info.
  void RefreshVcpuTime(uint32_t vcpu);
  uint16_t domid() const { return domid_; }

  // Counters for --stats: hypercalls by number.
  std::vector<std::pair<uint32_t, uint64_t>> HypercallCounts() const;

 private:
  using Ret = Result<long>;
  Ret XenVersion(const HypercallCall& c);
  Ret MemoryOp(const HypercallCall& c);
  Ret HvmOp(const HypercallCall& c);
  Ret VcpuOp(const HypercallCall& c);
  Ret EventChannelOp(const HypercallCall& c, uint64_t cmd, uint64_t arg);
  Ret SchedOp(const HypercallCall& c, uint64_t cmd, uint64_t arg);
  Ret SetTimerOp(const HypercallCall& c);
  Ret ConsoleIo(const HypercallCall& c);
  Ret GrantTableOp(const HypercallCall& c);
  Ret Sysctl(const HypercallCall& c);
  Ret Domctl(const HypercallCall& c);

  Ret AddToPhysmap(const HypercallCall& c, uint64_t arg);
  // XENMEM_increase_reservation / decrease_reservation / populate_physmap: extents done.
  long ReservationOp(const HypercallCall& c, uint32_t op, uint64_t start_extent, uint64_t arg);
  // Gfns whose page Xen (or a backend) keeps using: shared_info, registered vcpu_infos, grant
  // frames, the console and xenstore rings. Their host memory is never released.
  std::vector<uint64_t> PinnedGfnsLocked() const;
  // A Xen page (shared_info, a grant frame) is now mapped at gfn: a hole there is filled.
  void FillHoleLocked(uint64_t gfn);
  // gfn stopped backing a Xen page: if the guest had ballooned it out, release it now.
  void ReleaseIfHoleLocked(uint64_t gfn);
  GuestAccess Guest(uint32_t vcpu) const { return GuestAccess(platform_, memory_, vcpu, &reservation_); }
  Ret MapSharedInfo(uint64_t gfn);
  Ret RegisterVcpuInfo(const HypercallCall& c, uint32_t target, uint64_t arg);
  Ret Block(uint32_t vcpu);
  Ret Poll(const HypercallCall& c, uint64_t arg);
  bool ValidDomid(domid_t domid) const { return domid == DOMID_SELF || domid == domid_; }
  // Guest RAM (ballooned out or not: see reservation_).
  bool IsRam(uint64_t gpa, uint64_t len) const;
  // vcpu_info GPA of `vcpu` now: registered, else the default slot in shared_info (n < 32).
  uint64_t VcpuInfoGpaLocked(uint32_t vcpu) const;
  void WriteVcpuTime(uint32_t vcpu, uint64_t vcpu_info_gpa);
  void LogUnknownOnce(uint64_t nr, uint64_t cmd);

  Platform& platform_;
  mem::GuestMemory& memory_;
  evtchn::Engine& engine_;
  const uint16_t domid_;

  mutable std::mutex mutex_;
  uint64_t shared_info_gpa_ = kNoGpa;                 // guarded by mutex_
  std::vector<uint64_t> registered_vcpu_info_;        // guarded by mutex_; kNoGpa = default
  std::array<uint64_t, HVM_NR_PARAMS> params_{};      // guarded by mutex_
  std::array<uint64_t, kMaxGrantFrames> grant_gfns_{};  // guarded by mutex_; 0 = unmapped
  uint32_t grant_frames_ = 1;                         // guarded by mutex_
  Reservation reservation_;                           // mutations guarded by mutex_
  std::set<std::pair<uint64_t, uint64_t>> unknown_logged_;  // guarded by mutex_; (nr, cmd)
  std::array<std::atomic<uint64_t>, 64> counts_{};    // per hypercall number; relaxed atomics
};

}  // namespace xenkvm::xen
