// Domain core: hypercall dispatch, and where shared_info and each vcpu_info live
// (XENMEM_add_to_physmap XENMAPSPACE_shared_info, VCPUOP_register_vcpu_info; xen/xen.h).
#include "xen/domain.h"

#include <cstdio>
#include <cstring>

namespace xenkvm::xen {

namespace {
// abi/xen.h includes Xen's headers at the legacy interface version, where the names
// __HYPERVISOR_sched_op / __HYPERVISOR_event_channel_op alias the *_compat numbers. The
// numbers themselves are fixed ABI (xen/xen.h), so spell them out.
constexpr uint64_t kHypercallSchedOp = 29;
constexpr uint64_t kHypercallEventChannelOp = 32;
}  // namespace

Domain::Domain(Platform& platform, mem::GuestMemory& memory, evtchn::Engine& engine, Options options)
    : platform_(platform), memory_(memory), engine_(engine), domid_(options.domid),
      registered_vcpu_info_(platform.VcpuCount(), kNoGpa) {}

long Domain::Hypercall(const HypercallCall& c) {
  if (c.nr < counts_.size()) counts_[c.nr].fetch_add(1, std::memory_order_relaxed);
  // HVM guests' user mode may not make hypercalls (the guest kernel could let it reach the
  // trap port through the I/O bitmap; Xen answers -EPERM whatever the number).
  if (c.cpl != 0) return -XEN_EPERM;
  Ret r = [&]() -> Ret {
    switch (c.nr) {
      case __HYPERVISOR_set_timer_op: return SetTimerOp(c);
      case __HYPERVISOR_event_channel_op_compat: {
        // Legacy form: one struct evtchn_op {cmd; union u} instead of (cmd, arg).
        uint32_t cmd = TRY(GuestAccess(platform_, memory_, c.vcpu).ReadObj<uint32_t>(c.args[0]));
        return EventChannelOp(c, cmd, c.args[0] + offsetof(evtchn_op, u));
      }
      case __HYPERVISOR_xen_version: return XenVersion(c);
      case __HYPERVISOR_console_io: return ConsoleIo(c);
      case __HYPERVISOR_grant_table_op: return GrantTableOp(c);
      case __HYPERVISOR_memory_op: return MemoryOp(c);
      case __HYPERVISOR_vcpu_op: return VcpuOp(c);
      case kHypercallSchedOp: return SchedOp(c, c.args[0], c.args[1]);
      case __HYPERVISOR_sched_op_compat: {
        // Legacy form: SCHEDOP_shutdown passes the reason itself, not a pointer.
        if (c.args[0] == SCHEDOP_shutdown) {
          platform_.Shutdown(static_cast<uint32_t>(c.args[1]));
          return 0;
        }
        if (c.args[0] == SCHEDOP_yield || c.args[0] == SCHEDOP_block) return SchedOp(c, c.args[0], 0);
        LogUnknownOnce(c.nr, c.args[0]);
        return Fail(XEN_ENOSYS, "sched_op_compat");
      }
      case kHypercallEventChannelOp: return EventChannelOp(c, c.args[0], c.args[1]);
      case __HYPERVISOR_hvm_op: return HvmOp(c);
      default:
        LogUnknownOnce(c.nr, UINT64_MAX);
        return Fail(XEN_ENOSYS, "unknown hypercall");
    }
  }();
  return r ? *r : -static_cast<long>(r.error().xen_errno);
}

void Domain::LogUnknownOnce(uint64_t nr, uint64_t cmd) {
  std::lock_guard lock(mutex_);
  if (!unknown_logged_.emplace(nr, cmd).second) return;
  if (cmd == UINT64_MAX) {
    std::fprintf(stderr, "xenkvm: hypercall %llu not implemented: -ENOSYS\n", static_cast<unsigned long long>(nr));
  } else {
    std::fprintf(stderr, "xenkvm: hypercall %llu sub-op %llu not implemented: -ENOSYS\n",
                 static_cast<unsigned long long>(nr), static_cast<unsigned long long>(cmd));
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
  std::lock_guard lock(mutex_);
  if (index < params_.size()) params_[index] = value;
}

uint64_t Domain::Param(uint32_t index) const {
  std::lock_guard lock(mutex_);
  return index < params_.size() ? params_[index] : 0;
}

uint64_t Domain::SharedInfoGpa() const {
  std::lock_guard lock(mutex_);
  return shared_info_gpa_;
}

bool Domain::IsRam(uint64_t gpa, uint64_t len) const {
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
  return memory_.TranslateLocked(gpa, len).has_value();
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

void Domain::WriteVcpuTime(uint32_t vcpu, uint64_t vcpu_info_gpa) {
  auto time = platform_.VcpuTime(vcpu);
  if (!time) return;  // no pvclock available: leave the guest's copy alone
  uint64_t gpa = vcpu_info_gpa + offsetof(vcpu_info, time);
  auto old = memory_.ReadObj<vcpu_time_info>(gpa);
  // pvclock: readers retry while the version is odd or changed; bump it past the old one.
  time->version = old ? ((old->version | 1) + 1) : 2;
  (void)memory_.WriteObj(gpa, *time);
}

// XENMAPSPACE_shared_info. In Xen the page is Xen's and the GFN only names where the guest sees
// it, so a move keeps its contents: copy the old page to the new frame, switch the engine over,
// then OR in the pending bits that raced into the old frame during the copy.
Domain::Ret Domain::MapSharedInfo(uint64_t gfn) {
  if (gfn > (UINT64_MAX >> 12)) return Fail(XEN_EINVAL, "shared_info gfn");
  const uint64_t new_gpa = gfn << 12;
  if (!IsRam(new_gpa, abi::kPageSize)) return Fail(XEN_EINVAL, "shared_info gfn not RAM");
  std::vector<uint32_t> default_slot_vcpus;
  {
    std::lock_guard lock(mutex_);
    const uint64_t old_gpa = shared_info_gpa_;
    if (old_gpa == new_gpa) return 0;
    std::vector<std::byte> page(abi::kPageSize);
    if (old_gpa != kNoGpa) {
      TRY(CopyGuestWords(old_gpa, page));
    } else {
      // First mapping: Xen's shared_info starts zeroed, with the wall clock filled in.
      uint64_t sec = 0;
      uint32_t nsec = 0;
      platform_.BootWallclock(&sec, &nsec);
      auto* info = reinterpret_cast<shared_info*>(page.data());
      info->wc_version = 2;
      info->wc_sec = static_cast<uint32_t>(sec);
      info->wc_sec_hi = static_cast<uint32_t>(sec >> 32);
      info->wc_nsec = nsec;
    }
    TRY(memory_.Write(new_gpa, page));
    shared_info_gpa_ = new_gpa;
    TRY(engine_.SetSharedInfoGpa(new_gpa));
    if (old_gpa != kNoGpa) {
      // Late bits: events raised on the old frame between the copy and the switch.
      mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
      auto old_host = memory_.TranslateLocked(old_gpa, abi::kPageSize);
      auto new_host = memory_.TranslateLocked(new_gpa, abi::kPageSize);
      if (old_host && new_host) {
        for (size_t off = abi::Layout64::kEvtchnPending; off < abi::Layout64::kEvtchnMask; off += 8) {
          uint64_t late = mem::GuestAtomic<uint64_t>(*old_host + off).load();
          if (late != 0) mem::GuestAtomic<uint64_t>(*new_host + off).fetch_or(late);
        }
      }
    }
    for (uint32_t v = 0; v < registered_vcpu_info_.size() && v < abi::Layout64::kLegacyVcpus; ++v) {
      if (registered_vcpu_info_[v] != kNoGpa) continue;
      const uint64_t slot = VcpuInfoGpaLocked(v);
      (void)engine_.SetVcpuInfoGpa(v, slot);
      if (old_gpa != kNoGpa) MergeLateVcpuInfo(old_gpa + (slot - new_gpa), slot);
      WriteVcpuTime(v, slot);
      default_slot_vcpus.push_back(v);
    }
  }
  for (uint32_t v : default_slot_vcpus) platform_.RaiseUpcall(v);
  return 0;
}

// Reads guest memory that vCPUs and deliveries update with atomics, with 8-byte atomic loads
// (a plain memcpy would race with them). gpa and out.size() are multiples of 8.
Result<> Domain::CopyGuestWords(uint64_t gpa, std::span<std::byte> out) {
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
  uint8_t* host = TRY(memory_.TranslateLocked(gpa, out.size()));
  for (size_t off = 0; off + 8 <= out.size(); off += 8) {
    uint64_t word = mem::GuestAtomic<uint64_t>(host + off).load(std::memory_order_relaxed);
    std::memcpy(out.data() + off, &word, 8);
  }
  return {};
}

// Selector bits and upcall_pending that deliveries wrote to a vcpu_info's old place after the
// page was copied: OR them into the new place (set-only bits, so nothing is duplicated).
void Domain::MergeLateVcpuInfo(uint64_t old_gpa, uint64_t new_gpa) {
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
  auto old_host = memory_.TranslateLocked(old_gpa, sizeof(vcpu_info));
  auto new_host = memory_.TranslateLocked(new_gpa, sizeof(vcpu_info));
  if (!old_host || !new_host) return;
  const uint64_t sel = mem::GuestAtomic<uint64_t>(*old_host + abi::Layout64::kPendingSel).load();
  if (sel != 0) mem::GuestAtomic<uint64_t>(*new_host + abi::Layout64::kPendingSel).fetch_or(sel);
  if (mem::GuestAtomic<uint8_t>(*old_host + abi::Layout64::kUpcallPending).load() != 0) {
    mem::GuestAtomic<uint8_t>(*new_host + abi::Layout64::kUpcallPending).store(1);
  }
}

// VCPUOP_register_vcpu_info (xen/vcpu.h): the vcpu_info moves out of shared_info for good.
// Like Xen, copy the current contents and mark every selector bit pending so nothing raised
// during the move is lost (the guest sees at worst a spurious scan).
Domain::Ret Domain::RegisterVcpuInfo(const HypercallCall& c, uint32_t target, uint64_t arg) {
  auto info = TRY(GuestAccess(platform_, memory_, c.vcpu).ReadObj<vcpu_register_vcpu_info>(arg));
  if (info.rsvd != 0) return Fail(XEN_EINVAL, "register_vcpu_info rsvd");
  if (info.offset > abi::kPageSize - sizeof(vcpu_info)) return Fail(XEN_EINVAL, "register_vcpu_info offset");
  if (info.mfn > (UINT64_MAX >> 12)) return Fail(XEN_EINVAL, "register_vcpu_info mfn");
  const uint64_t new_gpa = (info.mfn << 12) + info.offset;
  if (!IsRam(new_gpa, sizeof(vcpu_info))) return Fail(XEN_EINVAL, "register_vcpu_info not RAM");
  {
    std::lock_guard lock(mutex_);
    if (registered_vcpu_info_[target] != kNoGpa) return Fail(XEN_EINVAL, "vcpu_info already registered");
    vcpu_info contents{};
    const uint64_t old_gpa = VcpuInfoGpaLocked(target);
    if (old_gpa != kNoGpa) TRY(CopyGuestWords(old_gpa, std::as_writable_bytes(std::span(&contents, 1))));
    contents.evtchn_upcall_pending = 1;
    contents.evtchn_pending_sel = ~xen_ulong_t{0};
    TRY(memory_.WriteObj(new_gpa, contents));
    registered_vcpu_info_[target] = new_gpa;
    TRY(engine_.SetVcpuInfoGpa(target, new_gpa));
    WriteVcpuTime(target, new_gpa);
  }
  platform_.RaiseUpcall(target);
  return 0;
}

}  // namespace xenkvm::xen
