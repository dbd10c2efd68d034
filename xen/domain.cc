// Domain core: hypercall dispatch, and where shared_info and each vcpu_info live
// (XENMEM_add_to_physmap XENMAPSPACE_shared_info, VCPUOP_register_vcpu_info; xen/xen.h).
#include "xen/domain.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

namespace xenkvm::xen {

Domain::Domain(Platform& platform, mem::GuestMemory& memory, evtchn::Engine& engine,
               Options options)
    : platform_(platform),
      memory_(memory),
      engine_(engine),
      domid_(options.domid),
      registered_vcpu_info_(platform.VcpuCount(), kNoGpa),
      upcall_vectors_(platform.VcpuCount(), 0),
      runstates_(platform.VcpuCount(), Runstate(platform.SystemTimeNs())),
      grants_(
          memory,
          [this](uint64_t gfn) { return reservation_.InRam(gfn, 1) && !reservation_.IsHole(gfn); }),
      pirqs_(engine, options.domid),
      reservation_(platform.RamPages()),
      console_io_max_bytes_(options.console_io_max_bytes),
      log_limiter_(options.log_per_second, options.log_burst) {
  // A new domain's shared state is 64-bit until the guest shows otherwise (Xen's
  // has_32bit_shinfo starts false).
  engine_.SetAbi(evtchn::Abi::k64);
  if (!runstates_.empty()) runstates_[0].Change(RUNSTATE_running, platform.SystemTimeNs());
}

long Domain::Hypercall(const HypercallCall& c) {
  if (c.nr < counts_.size()) counts_[c.nr].fetch_add(1, std::memory_order_relaxed);
  // HVM guests' user mode may not make hypercalls (the guest kernel could let it reach the
  // trap port through the I/O bitmap; Xen answers -EPERM whatever the number).
  if (c.cpl != 0) return -XEN_EPERM;
  Ret r = [&]() -> Ret {
    switch (c.nr) {
      case __HYPERVISOR_set_timer_op:
        return SetTimerOp(c);
      case __HYPERVISOR_event_channel_op_compat: {
        // Legacy form: one struct evtchn_op {cmd; union u} instead of (cmd, arg).
        uint32_t cmd = TRY(Guest(c.vcpu).ReadObj<uint32_t>(c.args[0]));
        return EventChannelOp(c, cmd, c.args[0] + offsetof(evtchn_op, u));
      }
      case __HYPERVISOR_xen_version:
        return XenVersion(c);
      case __HYPERVISOR_console_io:
        return ConsoleIo(c);
      case __HYPERVISOR_grant_table_op:
        return GrantTableOp(c);
      case __HYPERVISOR_memory_op:
        return MemoryOp(c);
      case __HYPERVISOR_vcpu_op:
        return VcpuOp(c);
      case __HYPERVISOR_sched_op:
        return SchedOp(c, c.args[0], c.args[1]);
      case __HYPERVISOR_sched_op_compat: {
        // Legacy form: SCHEDOP_shutdown passes the reason itself, not a pointer.
        if (c.args[0] == SCHEDOP_shutdown) {
          platform_.Shutdown(static_cast<uint32_t>(c.args[1]));
          return 0;
        }
        if (c.args[0] == SCHEDOP_yield || c.args[0] == SCHEDOP_block)
          return SchedOp(c, c.args[0], 0);
        LogUnknown(c.nr, c.args[0]);
        return Fail(XEN_ENOSYS, "sched_op_compat");
      }
      case __HYPERVISOR_event_channel_op:
        return EventChannelOp(c, c.args[0], c.args[1]);
      case __HYPERVISOR_hvm_op:
        return HvmOp(c);
      case __HYPERVISOR_physdev_op:
        return PhysdevOp(c);
      case __HYPERVISOR_vm_assist:
        return VmAssist(c);
      case __HYPERVISOR_sysctl:
        return Sysctl(c);
      case __HYPERVISOR_domctl:
        return Domctl(c);
      default:
        LogUnknown(c.nr, UINT64_MAX);
        return Fail(XEN_ENOSYS, "unknown hypercall");
    }
  }();
  return r ? *r : -static_cast<long>(r.error().xen_errno);
}

// The guest picks nr and cmd: nothing is remembered per pair (that would grow without bound);
// the limiter caps the lines and says how many were dropped.
void Domain::LogUnknown(uint64_t nr, uint64_t cmd) {
  uint64_t suppressed = 0;
  if (!log_limiter_.Allow(&suppressed)) return;
  char dropped[64] = "";
  if (suppressed != 0) {
    std::snprintf(dropped, sizeof(dropped), " (%llu similar suppressed)",
                  static_cast<unsigned long long>(suppressed));
  }
  if (cmd == UINT64_MAX) {
    std::fprintf(stderr, "xenkvm: hypercall %llu not implemented: -ENOSYS%s\n",
                 static_cast<unsigned long long>(nr), dropped);
  } else {
    std::fprintf(stderr, "xenkvm: hypercall %llu sub-op %llu not implemented: -ENOSYS%s\n",
                 static_cast<unsigned long long>(nr), static_cast<unsigned long long>(cmd),
                 dropped);
  }
}

std::vector<std::pair<uint32_t, uint64_t>> Domain::HypercallCounts() const {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (uint32_t i = 0; i < counts_.size(); ++i) {
    uint64_t n = counts_[i].load(std::memory_order_relaxed);
    if (n != 0) out.emplace_back(i, n);
  }
  return out;
}

void Domain::SetParamFromVmm(uint32_t index, uint64_t value) {
  MutexLock lock(mutex_);
  if (index < params_.size()) params_[index] = value;
}

uint64_t Domain::Param(uint32_t index) const {
  MutexLock lock(mutex_);
  return index < params_.size() ? params_[index] : 0;
}

void Domain::LatchShinfoLayout(bool compat) {
  MutexLock lock(mutex_);
  if (compat == shinfo_compat_) return;
  shinfo_compat_ = compat;
  engine_.SetAbi(compat ? evtchn::Abi::kCompat : evtchn::Abi::k64);
  // Like Xen's update_domain_wallclock_time: only the wall clock follows the new layout.
  WriteWallclockLocked();
}

bool Domain::shinfo_compat() const {
  MutexLock lock(mutex_);
  return shinfo_compat_;
}

// shared_info.wc_* in the latched layout, with the version protocol (odd while updating).
void Domain::WriteWallclockLocked() {
  if (shared_info_gpa_ == kNoGpa) return;
  uint64_t sec = 0;
  uint32_t nsec = 0;
  platform_.BootWallclock(&sec, &nsec);
  const uint64_t base = shared_info_gpa_;
  auto write = [&]<class L>(L) {
    uint32_t version = memory_.ReadObj<uint32_t>(base + L::kWcVersion).value_or(0);
    (void)memory_.WriteObj<uint32_t>(base + L::kWcVersion, (version | 1) + 0);
    (void)memory_.WriteObj<uint32_t>(base + L::kWcSec, static_cast<uint32_t>(sec));
    (void)memory_.WriteObj<uint32_t>(base + L::kWcNsec, nsec);
    (void)memory_.WriteObj<uint32_t>(base + L::kWcSecHi, static_cast<uint32_t>(sec >> 32));
    (void)memory_.WriteObj<uint32_t>(base + L::kWcVersion, (version | 1) + 1);
  };
  if (shinfo_compat_) {
    write(abi::LayoutCompat{});
  } else {
    write(abi::Layout64{});
  }
}

Result<evtchn::Port> Domain::SetupRing(SpecialRing ring, uint64_t gfn, evtchn::Backend* backend) {
  const uint32_t pfn_param =
      ring == SpecialRing::kConsole ? HVM_PARAM_CONSOLE_PFN : HVM_PARAM_STORE_PFN;
  const uint32_t evtchn_param =
      ring == SpecialRing::kConsole ? HVM_PARAM_CONSOLE_EVTCHN : HVM_PARAM_STORE_EVTCHN;
  if (gfn == 0 || gfn >= kMaxGfn) return Fail(XEN_EINVAL, "ring gfn");
  MutexLock lock(mutex_);
  if (params_[pfn_param] != 0) return Fail(XEN_EEXIST, "ring already set up");
  TRY(PlaceXenPageLocked(gfn));
  std::vector<std::byte> zero(abi::kPageSize);
  auto port =
      memory_.Write(gfn << 12, zero).and_then([&] { return engine_.ConnectBackend(backend); });
  if (!port) {
    RemoveXenPageLocked(gfn);
    return port;
  }
  params_[pfn_param] = gfn;
  params_[evtchn_param] = *port;
  return port;
}

uint64_t Domain::SharedInfoGpa() const {
  MutexLock lock(mutex_);
  return shared_info_gpa_;
}

// ---- Xen pages at guest-chosen gfns (xenmem_add_to_physmap_one in xen/arch/x86/mm/p2m.c) ----
// On RAM, the RAM page itself shows the Xen page (Xen frees the RAM page and puts its own
// there; the difference shows only once the Xen page moves away, when Xen leaves a hole and we
// leave the old RAM page). Elsewhere the Platform maps a host page on demand. A Xen page over
// another one is refused (-EBUSY) where Xen would unhook the older one: a Xen page we keep
// using (shared_info, a grant frame, a ring) must stay reachable.
bool Domain::HasXenPageLocked(uint64_t gfn) const {
  if (shared_info_gpa_ != kNoGpa && (shared_info_gpa_ >> 12) == gfn) return true;
  if (grants_.FrameAt(gfn) >= 0) return true;
  return params_[HVM_PARAM_CONSOLE_PFN] == gfn || params_[HVM_PARAM_STORE_PFN] == gfn;
}

Result<> Domain::PlaceXenPageLocked(uint64_t gfn) {
  if (HasXenPageLocked(gfn)) return Fail(XEN_EBUSY, "another Xen page is mapped at this gfn");
  if (reservation_.InRam(gfn, 1)) {
    FillHoleLocked(gfn);
    return {};
  }
  if (IsRam(gfn << 12, abi::kPageSize))
    return Fail(XEN_EBUSY, "gfn is backed by other host memory");
  TRY(platform_.MapSpecialPage(gfn));
  special_gfns_.push_back(gfn);
  return {};
}

void Domain::RemoveXenPageLocked(uint64_t gfn) {
  auto it = std::find(special_gfns_.begin(), special_gfns_.end(), gfn);
  if (it == special_gfns_.end()) return;
  special_gfns_.erase(it);
  platform_.UnmapSpecialPage(gfn);
}

bool Domain::IsRam(uint64_t gpa, uint64_t len) const {
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
  return memory_.TranslateGuarded(gpa, len).has_value();
}

uint64_t Domain::VcpuInfoGpaLocked(uint32_t vcpu) const {
  if (vcpu < registered_vcpu_info_.size() && registered_vcpu_info_[vcpu] != kNoGpa) {
    return registered_vcpu_info_[vcpu];
  }
  if (shared_info_gpa_ != kNoGpa && vcpu < abi::Layout64::kLegacyVcpus) {
    return shared_info_gpa_ + offsetof(shared_info, vcpu_info) + vcpu * sizeof(vcpu_info);
  }
  return kNoGpa;
}

void Domain::RefreshVcpuTime(uint32_t vcpu) {
  MutexLock lock(mutex_);
  const uint64_t gpa = VcpuInfoGpaLocked(vcpu);
  if (gpa != kNoGpa) WriteVcpuTime(vcpu, gpa);
}

void Domain::WriteVcpuTime(uint32_t vcpu, uint64_t vcpu_info_gpa) {
  auto time = platform_.VcpuTime(vcpu);
  if (!time) return;  // no pvclock available: leave the guest's copy alone
  uint64_t gpa = vcpu_info_gpa + offsetof(vcpu_info, time);
  auto old = memory_.ReadObj<vcpu_time_info>(gpa);
  // pvclock: readers retry while the version is odd or changed. A vCPU may read while we write,
  // so as Xen does: an odd version first, then the fields, then the next even version (x86
  // keeps stores in program order; each write is a separate call the compiler keeps in order).
  const uint32_t odd = old ? (old->version | 1) : 1;
  const uint64_t version_gpa = gpa + offsetof(vcpu_time_info, version);
  (void)memory_.WriteObj(version_gpa, odd);
  time->version = odd;
  (void)memory_.WriteObj(gpa, *time);
  (void)memory_.WriteObj(version_gpa, odd + 1);
}

// XENMAPSPACE_shared_info. In Xen the page is Xen's and the GFN only names where the guest sees
// it, so a move keeps its contents; the engine moves it (and the default-slot vcpu_infos) in
// one step with no event lost. The first mapping starts as Xen's page does: zeroed, with the
// wall clock filled in.
Domain::Ret Domain::MapSharedInfo(uint64_t gfn) {
  if (gfn >= kMaxGfn) return Fail(XEN_EINVAL, "shared_info gfn");
  const uint64_t new_gpa = gfn << 12;
  std::vector<uint32_t> default_slot_vcpus;
  {
    MutexLock lock(mutex_);
    if (shared_info_gpa_ == new_gpa) return 0;
    TRY(PlaceXenPageLocked(gfn));
    if (shared_info_gpa_ == kNoGpa) {
      // Xen's page starts zeroed, with the wall clock filled in.
      std::vector<std::byte> page(abi::kPageSize);
      if (auto written = memory_.Write(new_gpa, page); !written) {
        RemoveXenPageLocked(gfn);
        return tl::unexpected(written.error());
      }
    }
    for (uint32_t v = 0; v < registered_vcpu_info_.size() && v < abi::Layout64::kLegacyVcpus; ++v) {
      if (registered_vcpu_info_[v] == kNoGpa) default_slot_vcpus.push_back(v);
    }
    if (auto moved = engine_.SetSharedInfoGpa(new_gpa, default_slot_vcpus); !moved) {
      RemoveXenPageLocked(gfn);
      return tl::unexpected(moved.error());
    }
    const uint64_t old_gpa = std::exchange(shared_info_gpa_, new_gpa);
    if (old_gpa == kNoGpa) WriteWallclockLocked();
    if (old_gpa != kNoGpa) {
      RemoveXenPageLocked(old_gpa >> 12);
      ReleaseIfHoleLocked(old_gpa >> 12);
    }
    for (uint32_t v : default_slot_vcpus) WriteVcpuTime(v, VcpuInfoGpaLocked(v));
  }
  for (uint32_t v : default_slot_vcpus) platform_.RaiseUpcall(v);
  return 0;
}

// VCPUOP_register_vcpu_info (xen/vcpu.h): the vcpu_info moves out of shared_info for good.
// Like Xen's map_vcpu_info, the engine copies the current contents and marks every selector
// bit pending so nothing raised during the move is lost (the guest sees at worst a rescan).
Domain::Ret Domain::RegisterVcpuInfo(const HypercallCall& c, uint32_t target, uint64_t arg) {
  auto info = TRY(HypercallArgs(Guest(c.vcpu), c.compat).Read<vcpu_register_vcpu_info_t>(arg));
  if (info.rsvd != 0) return Fail(XEN_EINVAL, "register_vcpu_info rsvd");
  if (info.offset > abi::kPageSize - sizeof(vcpu_info))
    return Fail(XEN_EINVAL, "register_vcpu_info offset");
  if (info.mfn > (UINT64_MAX >> 12)) return Fail(XEN_EINVAL, "register_vcpu_info mfn");
  const uint64_t new_gpa = (info.mfn << 12) + info.offset;
  if (!IsRam(new_gpa, sizeof(vcpu_info))) return Fail(XEN_EINVAL, "register_vcpu_info not RAM");
  {
    MutexLock lock(mutex_);
    // Xen takes a reference on the guest's page: there must be one (not ballooned out).
    if (reservation_.IsHole(info.mfn))
      return Fail(XEN_EINVAL, "register_vcpu_info gfn ballooned out");
    if (registered_vcpu_info_[target] != kNoGpa)
      return Fail(XEN_EINVAL, "vcpu_info already registered");
    if (VcpuInfoGpaLocked(target) == kNoGpa) {
      // No current vcpu_info to carry over (shared_info not mapped, or vCPU >= 32): start
      // from Xen's, which is zeroed.
      TRY(memory_.WriteObj(new_gpa, vcpu_info{}));
    }
    TRY(engine_.SetVcpuInfoGpa(target, new_gpa));
    registered_vcpu_info_[target] = new_gpa;
    WriteVcpuTime(target, new_gpa);
  }
  platform_.RaiseUpcall(target);
  return 0;
}

}  // namespace xenkvm::xen
