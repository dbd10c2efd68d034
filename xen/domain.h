// One Xen HVM/PVH domain as its guest sees it through hypercalls: the hypercall dispatcher and
// the Xen-side state behind it (shared_info placement, vcpu_info registration, HVM params,
// grant-table frames, the memory reservation). Semantics and error codes follow Xen's public
// headers (xen/xen.h, memory.h, hvm/hvm_op.h, vcpu.h, sched.h, event_channel.h, grant_table.h,
// version.h, sysctl.h, domctl.h).
//
// Threads: Hypercall() on the calling vCPU's thread; every vCPU thread may be in it at once.
// Lock: mutex_ guards the state below it; it is never held while calling the Engine's
// delivery paths or Platform::Sleep (lock order: Domain::mutex_ -> Engine -> GrantTable ->
// GuestMemory). Argument structs are decoded in the caller's layout (hypercall_args.h); the
// shared_info layout is latched here and only here (LatchShinfoLayout) and set on the Engine.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "abi/rate_limit.h"
#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "evtchn/engine.h"
#include "evtchn/pirq_table.h"
#include "mem/guest_memory.h"
#include "snapshot/codec.h"
#include "xen/grants.h"
#include "xen/guest_access.h"
#include "xen/hypercall_args.h"
#include "xen/platform.h"
#include "xen/reservation.h"
#include "xen/runstate.h"

namespace xenkvm::xen {

// A decoded hypercall: what the trap delivered (number and the five argument registers).
struct HypercallCall {
  uint32_t vcpu = 0;  // Xen vCPU id of the caller
  uint64_t nr = 0;
  std::array<uint64_t, 5> args{};  // 64-bit: rdi rsi rdx r10 r8; compat: ebx ecx edx esi edi
  bool compat = false;             // caller runs in 32-bit mode (not in long mode)
  uint8_t cpl = 0;                 // privilege level of the caller (Xen: only CPL0 may call)
};

// The rings a toolstack sets up for the guest (HVM_PARAM_{CONSOLE,STORE}_{PFN,EVTCHN}).
enum class SpecialRing { kConsole, kStore };

class Domain {
 public:
  static constexpr uint64_t kNoGpa = UINT64_MAX;
  static constexpr uint64_t kMaxGfn = uint64_t{1} << 40;  // 52-bit guest-physical addresses
  static constexpr uint32_t kMaxGrantFrames = GrantTable::kDefaultMaxFrames;
  // Where libxc puts the rings of an HVM guest (special_pfn(): 8 pages below 0xff000, console
  // index 7, xenstore index 4): outside RAM, reserved in no memory map.
  static constexpr uint64_t kConsoleRingGfn = 0xfefff;
  static constexpr uint64_t kStoreRingGfn = 0xfeffc;

  struct Options {
    uint16_t domid = 1;
    // Guest-triggered log lines (unknown hypercalls/sub-ops): at most this many per second
    // after a burst of log_burst; 0 = none. Constant memory whatever the guest calls.
    uint32_t log_per_second = 5;
    uint32_t log_burst = 20;
    // CONSOLEIO_write: bytes shown per call; the rest is consumed unshown (Xen writes all of it
    // with continuations; one call may not hold a vCPU thread for GiBs).
    uint32_t console_io_max_bytes = 64 * 1024;
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

  // ---- shared_info layout (Xen's hvm_latch_shinfo_size) ----
  // The VMM calls this when the guest writes the hypercall-page MSR, with whether the writing
  // vCPU is outside 64-bit mode; HVM_PARAM_CALLBACK_IRQ latches the same way. Sets the Engine's
  // ABI (64-bit: 4096 ports; compat: 1024) and rewrites the wall clock in the latched layout.
  void LatchShinfoLayout(bool compat);
  bool shinfo_compat() const;

  // ---- special pages the VMM sets up (any thread, before or while the guest runs) ----
  // Puts ring page `ring` at gfn (outside RAM: a host page mapped on demand; inside RAM: that
  // RAM page), connects a guest port to `backend` (an interdomain port whose far end is domain
  // 0, as EVTCHNOP_status reports) and sets the two HVM params. Returns the guest port. The
  // ring's contents are at gfn << 12 in the GuestMemory.
  Result<evtchn::Port> SetupRing(SpecialRing ring, uint64_t gfn, evtchn::Backend* backend);

  // ---- grants, for the VMM's backends (any thread) ----
  GrantTable& grants() { return grants_; }
  // ---- PIRQs, for the VMM's devices: raise with RaiseMsi (any thread, never blocks) ----
  evtchn::PirqTable& pirqs() { return pirqs_; }

  // ---- runstate (VCPUOP_register_runstate_memory_area, get_runstate_info) ----
  // The VMM reports a vCPU's scheduling transitions, on that vCPU's thread (a registered area
  // is written through its page tables): RUNSTATE_running when it (re)enters the guest after
  // being blocked or offline, RUNSTATE_blocked when it halts, RUNSTATE_offline when it goes
  // down. SCHEDOP_block/poll report blocked/running themselves.
  void NoteRunstate(uint32_t vcpu, int state);

  // ---- snapshots (docs/snapshots.md) ----
  // The Xen-side state: shared_info and vcpu_info places, HVM params, the latched layout and
  // assists, the guest's memory map, the special pages outside RAM (their contents are the
  // VMM's to save), runstates and their areas, grant frames, ballooned-out holes, hypercall
  // counts. Called with every vCPU paused.
  void Save(snapshot::Encoder& out) const;
  // For a Domain constructed with the same vCPU count and RAM as the saved one, before the
  // guest runs and before Engine::Restore (which needs the special pages mapped). Maps the
  // snapshot's special pages (and drops others the VMM placed), the rest is put back as saved.
  // The input is hostile: checked whole before anything changes.
  Result<> Restore(snapshot::Decoder& in);
  // Gfns of the Xen pages outside RAM (mapped host pages), for the VMM to save and restore.
  std::vector<uint64_t> SpecialGfns() const;

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
  Ret PhysdevOp(const HypercallCall& c);
  bool VectorCallbackLocked() const XENKVM_REQUIRES(mutex_);

  Ret AddToPhysmap(const HypercallCall& c, uint64_t arg);
  Ret MapGrantFrame(uint64_t idx, uint64_t gfn);
  Ret SetMemoryMap(const HypercallCall& c, uint64_t arg);
  Ret VmAssist(const HypercallCall& c);
  Ret SetupTable(const HypercallCall& c, uint64_t uop, uint64_t count);
  Ret RegisterRunstateArea(const HypercallCall& c, uint32_t target, uint64_t arg);
  Ret RegisterTimeArea(const HypercallCall& c, uint32_t target, uint64_t arg);
  // Places a Xen page at gfn: RAM keeps its page; elsewhere a host page is mapped. -EBUSY if
  // another Xen page is there. Fills a ballooned-out hole.
  Result<> PlaceXenPageLocked(uint64_t gfn) XENKVM_REQUIRES(mutex_);
  // A Xen page left gfn: outside RAM its host page goes (a special page's contents with it).
  void RemoveXenPageLocked(uint64_t gfn) XENKVM_REQUIRES(mutex_);
  // Whether a Xen page (shared_info, a grant frame, a ring) sits at gfn.
  bool HasXenPageLocked(uint64_t gfn) const XENKVM_REQUIRES(mutex_);
  void WriteWallclockLocked() XENKVM_REQUIRES(mutex_);
  Result<> RestoreSpecialPagesLocked(const std::vector<uint64_t>& special) XENKVM_REQUIRES(mutex_);
  // Writes the vCPU's runstate to its registered area with Xen's XEN_RUNSTATE_UPDATE protocol
  // (when the guest enabled VMASST_TYPE_runstate_update_flag). On `vcpu`'s own thread.
  void UpdateRunstateArea(uint32_t vcpu);
  // XENMEM_increase_reservation / decrease_reservation / populate_physmap: extents done.
  long ReservationOp(const HypercallCall& c, uint32_t op, uint64_t start_extent, uint64_t arg);
  // Gfns whose page Xen (or a backend) keeps using: shared_info, registered vcpu_infos, grant
  // frames, the console and xenstore rings. Their host memory is never released.
  std::vector<uint64_t> PinnedGfnsLocked() const XENKVM_REQUIRES(mutex_);
  // A Xen page (shared_info, a grant frame) is now mapped at gfn: a hole there is filled.
  void FillHoleLocked(uint64_t gfn) XENKVM_REQUIRES(mutex_);
  // gfn stopped backing a Xen page: if the guest had ballooned it out, release it now.
  void ReleaseIfHoleLocked(uint64_t gfn) XENKVM_REQUIRES(mutex_);
  GuestAccess Guest(uint32_t vcpu) const {
    return GuestAccess(platform_, memory_, vcpu, &reservation_);
  }
  Ret MapSharedInfo(uint64_t gfn);
  Ret RegisterVcpuInfo(const HypercallCall& c, uint32_t target, uint64_t arg);
  Ret Block(uint32_t vcpu);
  Ret Poll(const HypercallCall& c, uint64_t arg);
  bool ValidDomid(domid_t domid) const { return domid == DOMID_SELF || domid == domid_; }
  // Guest RAM (ballooned out or not: see reservation_).
  bool IsRam(uint64_t gpa, uint64_t len) const;
  // vcpu_info GPA of `vcpu` now: registered, else the default slot in shared_info (n < 32).
  uint64_t VcpuInfoGpaLocked(uint32_t vcpu) const XENKVM_REQUIRES(mutex_);
  void WriteVcpuTime(uint32_t vcpu, uint64_t vcpu_info_gpa);
  // Logs an unimplemented (number, sub-op) through log_limiter_.
  void LogUnknown(uint64_t nr, uint64_t cmd);

  Platform& platform_;
  mem::GuestMemory& memory_;
  evtchn::Engine& engine_;
  const uint16_t domid_;

  mutable Mutex mutex_;
  uint64_t shared_info_gpa_ XENKVM_GUARDED_BY(mutex_) = kNoGpa;
  std::vector<uint64_t> registered_vcpu_info_ XENKVM_GUARDED_BY(mutex_);  // kNoGpa = default
  std::vector<uint8_t> upcall_vectors_ XENKVM_GUARDED_BY(mutex_);         // per vCPU; 0 = none
  std::array<uint64_t, HVM_NR_PARAMS> params_ XENKVM_GUARDED_BY(mutex_){};
  bool shinfo_compat_ XENKVM_GUARDED_BY(mutex_) = false;         // Xen's has_32bit_shinfo
  bool runstate_update_flag_ XENKVM_GUARDED_BY(mutex_) = false;  // VMASST_TYPE_runstate_update_flag
  bool vcpu0_upcall_vector_ XENKVM_GUARDED_BY(mutex_) = false;   // HVMOP_set_evtchn_upcall_vector
  // XENMEM_set_memory_map: the guest's own map, reported by XENMEM_memory_map from then on.
  std::vector<MemoryMapEntry> memory_map_ XENKVM_GUARDED_BY(mutex_);
  bool memory_map_set_ XENKVM_GUARDED_BY(mutex_) = false;
  std::vector<uint64_t> special_gfns_ XENKVM_GUARDED_BY(mutex_);  // host pages mapped outside RAM
  std::vector<Runstate> runstates_ XENKVM_GUARDED_BY(mutex_);     // per vCPU
  GrantTable grants_;
  evtchn::PirqTable pirqs_;  // its own lock, taken after mutex_ is released
  Reservation reservation_;  // mutations guarded by mutex_
  const uint32_t console_io_max_bytes_;
  RateLimiter log_limiter_;
  std::array<std::atomic<uint64_t>, 64> counts_{};  // per hypercall number; relaxed atomics
};

}  // namespace xenkvm::xen
