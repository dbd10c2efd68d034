// vcpu_op (xen/vcpu.h: initialise/up/down/is_up, register_vcpu_info, timers), sched_op
// (xen/sched.h: yield, block, poll, shutdown) and set_timer_op. Timers raise VIRQ_TIMER.
#include <atomic>
#include <cstring>
#include <vector>

#include "xen/domain.h"

namespace xenkvm::xen {

namespace {
constexpr uint32_t kMaxPollPorts = 128;             // Xen's limit for SCHEDOP_poll
constexpr uint64_t kMinPeriodNs = 1'000'000;        // VCPUOP_set_periodic_timer: at least 1 ms
constexpr uint64_t kMaxPeriodNs = UINT64_MAX >> 2;  // ... and at most Xen's STIME_DELTA_MAX
// Xen's times are signed (s_time_t): a guest value above this is negative there, i.e. past.
constexpr uint64_t kStimeMax = UINT64_MAX >> 1;
// set_timer_op: Xen's workaround for Linux's wrapped jiffies: a negative timeout, or one more
// than 2^50 ns (~13 days) ahead, fires in 100 ms instead (neither at once nor never).
constexpr uint64_t kHugeTimeoutShift = 50;
constexpr uint64_t kHugeTimeoutDelayNs = 100'000'000;
}  // namespace

Domain::Ret Domain::VcpuOp(const HypercallCall& c) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  const uint64_t cmd = c.compat ? (c.args[0] & 0xffffffffu) : c.args[0];
  const uint64_t target64 = c.compat ? (c.args[1] & 0xffffffffu) : c.args[1];
  const uint64_t arg = c.args[2];
  if (target64 >= platform_.VcpuCount()) return Fail(XEN_ENOENT, "vcpu_op vcpu id");
  const uint32_t target = static_cast<uint32_t>(target64);
  switch (cmd) {
    case VCPUOP_initialise: {
      auto ctx = TRY(guest.Read<vcpu_hvm_context_t>(arg));
      if (ctx.mode != VCPU_HVM_MODE_32B && ctx.mode != VCPU_HVM_MODE_64B) {
        return Fail(XEN_EINVAL, "vcpu_hvm_context mode");
      }
      TRY(platform_.InitialiseVcpu(target, ctx));
      return 0;
    }
    case VCPUOP_up:
      TRY(platform_.UpVcpu(target));
      return 0;
    case VCPUOP_down:
      TRY(platform_.DownVcpu(target));
      return 0;
    case VCPUOP_is_up:
      return platform_.VcpuIsUp(target) ? 1 : 0;
    case VCPUOP_register_vcpu_info:
      return RegisterVcpuInfo(c, target, arg);
    case VCPUOP_register_runstate_memory_area:
      return RegisterRunstateArea(c, target, arg);
    case VCPUOP_get_runstate_info: {
      vcpu_runstate_info info;
      {
        MutexLock lock(mutex_);
        info = runstates_[target].Get(platform_.SystemTimeNs());
      }
      TRY(guest.Write(arg, info));
      return 0;
    }
    case VCPUOP_register_vcpu_time_memory_area:
      return RegisterTimeArea(c, target, arg);
    case VCPUOP_set_singleshot_timer: {
      // Timers belong to the calling vCPU only.
      if (target != c.vcpu) return Fail(XEN_EINVAL, "singleshot timer of another vcpu");
      auto t = TRY(guest.Read<vcpu_set_singleshot_timer_t>(arg));
      if ((t.flags & VCPU_SSHOTTMR_future) && t.timeout_abs_ns < platform_.SystemTimeNs()) {
        return Fail(XEN_ETIME, "singleshot timer in the past");
      }
      // Beyond kStimeMax Xen's signed timer is in the past: it fires at once.
      const uint64_t deadline =
          t.timeout_abs_ns == 0 || t.timeout_abs_ns > kStimeMax ? 1 : t.timeout_abs_ns;
      platform_.SetTimer(target, deadline, 0);
      return 0;
    }
    case VCPUOP_stop_singleshot_timer:
      if (target != c.vcpu) return Fail(XEN_EINVAL, "singleshot timer of another vcpu");
      platform_.SetTimer(target, 0, 0);
      return 0;
    case VCPUOP_set_periodic_timer: {
      auto t = TRY(guest.Read<vcpu_set_periodic_timer_t>(arg));
      if (t.period_ns < kMinPeriodNs || t.period_ns > kMaxPeriodNs)
        return Fail(XEN_EINVAL, "periodic timer period");
      platform_.SetTimer(target, platform_.SystemTimeNs() + t.period_ns, t.period_ns);
      return 0;
    }
    case VCPUOP_stop_periodic_timer:
      // Shares the one timer with singleshot here; guests stop the periodic one at boot.
      return 0;
    default:
      LogUnknown(c.nr, cmd);
      return Fail(XEN_ENOSYS, "vcpu_op cmd");
  }
}

Domain::Ret Domain::SetTimerOp(const HypercallCall& c) {
  const uint64_t timeout = c.compat ? ((c.args[0] & 0xffffffffu) | (c.args[1] << 32)) : c.args[0];
  if (timeout == 0) {
    platform_.SetTimer(c.vcpu, 0, 0);
    return 0;
  }
  const uint64_t now = platform_.SystemTimeNs();
  if (timeout > kStimeMax || (timeout > now && ((timeout - now) >> kHugeTimeoutShift) != 0)) {
    platform_.SetTimer(c.vcpu, now + kHugeTimeoutDelayNs, 0);
  } else {
    platform_.SetTimer(c.vcpu, timeout, 0);  // a past deadline fires at once
  }
  return 0;
}

Domain::Ret Domain::SchedOp(const HypercallCall& c, uint64_t cmd, uint64_t arg) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  switch (cmd) {
    case SCHEDOP_yield:
      platform_.Yield(c.vcpu);
      return 0;
    case SCHEDOP_block:
      return Block(c.vcpu);
    case SCHEDOP_shutdown: {
      auto s = TRY(guest.Read<sched_shutdown_t>(arg));
      platform_.Shutdown(s.reason);
      return 0;
    }
    case SCHEDOP_poll:
      return Poll(c, arg);
    case SCHEDOP_shutdown_code:
      return 0;  // the reason given to SCHEDOP_shutdown is what we report
    default:
      break;
  }
  LogUnknown(c.nr, cmd);
  return Fail(XEN_ENOSYS, "sched_op cmd");
}

// SCHEDOP_block: enable event delivery, then sleep until an upcall is pending.
Domain::Ret Domain::Block(uint32_t vcpu) {
  uint64_t info_gpa;
  {
    MutexLock lock(mutex_);
    info_gpa = VcpuInfoGpaLocked(vcpu);
  }
  if (info_gpa != kNoGpa) {
    (void)memory_.WriteObj<uint8_t>(info_gpa + abi::Layout64::kUpcallMask, 0);
  }
  bool blocked = false;
  for (;;) {
    uint64_t seq = platform_.WakeSeq(vcpu);
    if (platform_.Stopping() || engine_.UpcallPending(vcpu)) break;
    if (!blocked) NoteRunstate(vcpu, RUNSTATE_blocked);
    blocked = true;
    platform_.Sleep(vcpu, seq, 0);
  }
  if (blocked) NoteRunstate(vcpu, RUNSTATE_running);
  return 0;
}

// SCHEDOP_poll: sleep until one of the ports is pending (masked or not), the absolute timeout
// passes (0 = none) or the vCPU is otherwise woken; Xen allows spurious returns.
Domain::Ret Domain::Poll(const HypercallCall& c, uint64_t arg) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  auto poll = TRY(guest.Read<sched_poll_t>(arg));
  if (poll.nr_ports > kMaxPollPorts) return Fail(XEN_EINVAL, "poll nr_ports");
  std::vector<evtchn::Port> ports(poll.nr_ports);
  TRY(guest.guest().Read(HandleGva(poll.ports), std::as_writable_bytes(std::span(ports))));
  // Xen's evtchn_port_poll(): a port that is not usable (beyond the table, free, or the
  // reserved port 0) is -EINVAL. (Xen stops at the first pending port before looking further;
  // we check them all first.)
  for (evtchn::Port port : ports) {
    evtchn_status_t status{};
    status.dom = DOMID_SELF;
    status.port = port;
    if (!engine_.Status(status) || status.status == EVTCHNSTAT_closed)
      return Fail(XEN_EINVAL, "poll on unusable port");
  }
  // Take the wake sequence before registering so a wake between the two isn't lost.
  uint64_t seq = platform_.WakeSeq(c.vcpu);
  bool ready = TRY(engine_.BeginPoll(c.vcpu, ports));
  // A timeout beyond kStimeMax is in the past for Xen's signed timer: return at once.
  if (!ready && !platform_.Stopping() && poll.timeout <= kStimeMax &&
      (poll.timeout == 0 || poll.timeout > platform_.SystemTimeNs())) {
    NoteRunstate(c.vcpu, RUNSTATE_blocked);
    platform_.Sleep(c.vcpu, seq, poll.timeout);
    NoteRunstate(c.vcpu, RUNSTATE_running);
  }
  engine_.EndPoll(c.vcpu);
  return 0;
}

// VCPUOP_register_runstate_memory_area (xen/common/domain.c): any vCPU's; the area is a
// guest-virtual address, written at once (success or not, as Xen ignores that copy's result)
// and at every later runstate change of that vCPU, in the latched shared_info layout.
Domain::Ret Domain::RegisterRunstateArea(const HypercallCall& c, uint32_t target, uint64_t arg) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  auto area = TRY(guest.Read<vcpu_register_runstate_memory_area_t>(arg));
  vcpu_runstate_info info;
  {
    MutexLock lock(mutex_);
    runstates_[target].area_gva = area.addr.p;
    info = target == c.vcpu ? runstates_[target].info()
                            : runstates_[target].Get(platform_.SystemTimeNs());
  }
  if (area.addr.p != 0) (void)guest.Write(area.addr.p, info);
  return 0;
}

// VCPUOP_register_vcpu_time_memory_area (x86): a second vcpu_time_info at a guest-virtual
// address, refreshed when Xen refreshes the vCPU's time (here: at registration).
Domain::Ret Domain::RegisterTimeArea(const HypercallCall& c, uint32_t target, uint64_t arg) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  auto area = TRY(guest.Read<vcpu_register_time_memory_area_t>(arg));
  if (area.addr.p == 0) return 0;  // unregisters
  auto time = platform_.VcpuTime(target);
  if (!time) return 0;
  uint32_t old_version = guest.guest().ReadObj<uint32_t>(area.addr.p).value_or(0);
  time->version = (old_version | 1) + 1;
  (void)guest.Write(area.addr.p, *time);
  return 0;
}

void Domain::NoteRunstate(uint32_t vcpu, int state) {
  {
    MutexLock lock(mutex_);
    if (vcpu >= runstates_.size() || !runstates_[vcpu].Change(state, platform_.SystemTimeNs()))
      return;
    if (runstates_[vcpu].area_gva == 0) return;
  }
  UpdateRunstateArea(vcpu);
}

// Xen's update_runstate_area: with VMASST_TYPE_runstate_update_flag, first set
// XEN_RUNSTATE_UPDATE (bit 63 of state_entry_time: its top byte alone), then write the whole
// struct, then clear the flag, so a reader that sees the flag retries.
void Domain::UpdateRunstateArea(uint32_t vcpu) {
  uint64_t gva;
  vcpu_runstate_info info;
  bool flag, compat;
  {
    MutexLock lock(mutex_);
    gva = runstates_[vcpu].area_gva;
    info = runstates_[vcpu].info();
    flag = runstate_update_flag_;
    compat = shinfo_compat_;
  }
  HypercallArgs guest(Guest(vcpu), compat);
  const uint64_t top_byte = gva +
                            (compat ? offsetof(abi::CompatVcpuRunstateInfo, state_entry_time)
                                    : offsetof(vcpu_runstate_info, state_entry_time)) +
                            7;
  auto write_top = [&](uint64_t entry_time) {
    (void)guest.guest().WriteObj<uint8_t>(top_byte, static_cast<uint8_t>(entry_time >> 56));
    std::atomic_thread_fence(std::memory_order_release);
  };
  if (flag) write_top(info.state_entry_time | XEN_RUNSTATE_UPDATE);
  info.state_entry_time |= flag ? XEN_RUNSTATE_UPDATE : 0;
  (void)guest.Write(gva, info);
  std::atomic_thread_fence(std::memory_order_release);
  if (flag) write_top(info.state_entry_time & ~XEN_RUNSTATE_UPDATE);
}

// vm_assist (xen/common/domain.c do_vm_assist): an HVM domain may only toggle
// VMASST_TYPE_runstate_update_flag.
Domain::Ret Domain::VmAssist(const HypercallCall& c) {
  const uint64_t cmd = c.args[0] & 0xffffffffu;
  const uint64_t type = c.args[1] & 0xffffffffu;
  if (type != VMASST_TYPE_runstate_update_flag) return Fail(XEN_EINVAL, "vm_assist type");
  if (cmd != VMASST_CMD_enable && cmd != VMASST_CMD_disable)
    return Fail(XEN_ENOSYS, "vm_assist cmd");
  MutexLock lock(mutex_);
  runstate_update_flag_ = cmd == VMASST_CMD_enable;
  return 0;
}

}  // namespace xenkvm::xen
