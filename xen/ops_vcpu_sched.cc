// vcpu_op (xen/vcpu.h: initialise/up/down/is_up, register_vcpu_info, timers), sched_op
// (xen/sched.h: yield, block, poll, shutdown) and set_timer_op. Timers raise VIRQ_TIMER.
#include <cstring>
#include <vector>

#include "xen/domain.h"

namespace xenkvm::xen {

namespace {
constexpr uint32_t kMaxPollPorts = 128;  // Xen's limit for SCHEDOP_poll
constexpr uint64_t kMinPeriodNs = 1'000'000;  // VCPUOP_set_periodic_timer: at least 1 ms
constexpr uint64_t kMaxPeriodNs = UINT64_MAX >> 2;  // ... and at most Xen's STIME_DELTA_MAX
// Xen's times are signed (s_time_t): a guest value above this is negative there, i.e. past.
constexpr uint64_t kStimeMax = UINT64_MAX >> 1;
// set_timer_op: Xen's workaround for Linux's wrapped jiffies: a negative timeout, or one more
// than 2^50 ns (~13 days) ahead, fires in 100 ms instead (neither at once nor never).
constexpr uint64_t kHugeTimeoutShift = 50;
constexpr uint64_t kHugeTimeoutDelayNs = 100'000'000;
}  // namespace

Domain::Ret Domain::VcpuOp(const HypercallCall& c) {
  GuestAccess guest = Guest(c.vcpu);
  const uint64_t cmd = c.args[0];
  const uint64_t target64 = c.args[1];
  const uint64_t arg = c.args[2];
  if (target64 >= platform_.VcpuCount()) return Fail(XEN_ENOENT, "vcpu_op vcpu id");
  const uint32_t target = static_cast<uint32_t>(target64);
  switch (cmd) {
    case VCPUOP_initialise: {
      auto ctx = TRY(guest.ReadObj<vcpu_hvm_context_t>(arg));
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
    case VCPUOP_set_singleshot_timer: {
      // Timers belong to the calling vCPU only.
      if (target != c.vcpu) return Fail(XEN_EINVAL, "singleshot timer of another vcpu");
      auto t = TRY(guest.ReadObj<vcpu_set_singleshot_timer_t>(arg));
      if ((t.flags & VCPU_SSHOTTMR_future) && t.timeout_abs_ns < platform_.SystemTimeNs()) {
        return Fail(XEN_ETIME, "singleshot timer in the past");
      }
      // Beyond kStimeMax Xen's signed timer is in the past: it fires at once.
      const uint64_t deadline = t.timeout_abs_ns == 0 || t.timeout_abs_ns > kStimeMax ? 1 : t.timeout_abs_ns;
      platform_.SetTimer(target, deadline, 0);
      return 0;
    }
    case VCPUOP_stop_singleshot_timer:
      if (target != c.vcpu) return Fail(XEN_EINVAL, "singleshot timer of another vcpu");
      platform_.SetTimer(target, 0, 0);
      return 0;
    case VCPUOP_set_periodic_timer: {
      auto t = TRY(guest.ReadObj<vcpu_set_periodic_timer_t>(arg));
      if (t.period_ns < kMinPeriodNs || t.period_ns > kMaxPeriodNs) return Fail(XEN_EINVAL, "periodic timer period");
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
  GuestAccess guest = Guest(c.vcpu);
  switch (cmd) {
    case SCHEDOP_yield:
      platform_.Yield(c.vcpu);
      return 0;
    case SCHEDOP_block:
      return Block(c.vcpu);
    case SCHEDOP_shutdown: {
      auto s = TRY(guest.ReadObj<sched_shutdown_t>(arg));
      platform_.Shutdown(s.reason);
      return 0;
    }
    case SCHEDOP_poll:
      if (c.compat) break;  // the ports handle is 4 bytes in compat; not translated
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
    std::lock_guard lock(mutex_);
    info_gpa = VcpuInfoGpaLocked(vcpu);
  }
  if (info_gpa != kNoGpa) {
    (void)memory_.WriteObj<uint8_t>(info_gpa + abi::Layout64::kUpcallMask, 0);
  }
  for (;;) {
    uint64_t seq = platform_.WakeSeq(vcpu);
    if (platform_.Stopping() || engine_.UpcallPending(vcpu)) return 0;
    platform_.Sleep(vcpu, seq, 0);
  }
}

// SCHEDOP_poll: sleep until one of the ports is pending (masked or not), the absolute timeout
// passes (0 = none) or the vCPU is otherwise woken; Xen allows spurious returns.
Domain::Ret Domain::Poll(const HypercallCall& c, uint64_t arg) {
  GuestAccess guest = Guest(c.vcpu);
  auto poll = TRY(guest.ReadObj<sched_poll_t>(arg));
  if (poll.nr_ports > kMaxPollPorts) return Fail(XEN_EINVAL, "poll nr_ports");
  std::vector<evtchn::Port> ports(poll.nr_ports);
  uint64_t ports_gva;  // the guest handle: one 64-bit guest-virtual pointer at offset 0
  static_assert(sizeof(poll.ports) == sizeof(ports_gva));
  std::memcpy(&ports_gva, &poll.ports, sizeof(ports_gva));
  TRY(guest.Read(ports_gva, std::as_writable_bytes(std::span(ports))));
  // Take the wake sequence before registering so a wake between the two isn't lost.
  uint64_t seq = platform_.WakeSeq(c.vcpu);
  bool ready = TRY(engine_.BeginPoll(c.vcpu, ports));
  // A timeout beyond kStimeMax is in the past for Xen's signed timer: return at once.
  if (!ready && !platform_.Stopping() && poll.timeout <= kStimeMax &&
      (poll.timeout == 0 || poll.timeout > platform_.SystemTimeNs())) {
    platform_.Sleep(c.vcpu, seq, poll.timeout);
  }
  engine_.EndPoll(c.vcpu);
  return 0;
}

}  // namespace xenkvm::xen
