// A vCPU's runstate accounting as Xen keeps it (xen/include/public/vcpu.h struct
// vcpu_runstate_info; xen/common/sched/core.c vcpu_runstate_change): the current state, when it
// was entered, and the time spent in each state, all in Xen system time.
#pragma once

#include <algorithm>
#include <cstdint>

#include "abi/xen.h"

namespace xenkvm::xen {

// Not thread-safe: the owner (Domain) locks.
class Runstate {
 public:
  // A vCPU starts offline at system time `now` (vCPU 0 is then made running by the VMM).
  explicit Runstate(uint64_t now = 0) {
    info_.state = RUNSTATE_offline;
    info_.state_entry_time = now;
  }

  // Enter `state` at `now`; the time since the last change goes to the state being left.
  // Returns whether the state changed.
  bool Change(int state, uint64_t now) {
    if (state == info_.state) return false;
    Account(now);
    info_.state = state;
    return true;
  }
  // What VCPUOP_get_runstate_info reports at `now` (Xen's vcpu_runstate_get: the current
  // state's time includes the time spent in it so far).
  vcpu_runstate_info Get(uint64_t now) const {
    vcpu_runstate_info r = info_;
    if (now > r.state_entry_time && r.state >= 0 && r.state < 4) {
      r.time[r.state] += now - r.state_entry_time;
      r.state_entry_time = now;
    }
    return r;
  }
  // The snapshot Xen writes to a registered area: as of the last change.
  const vcpu_runstate_info& info() const { return info_; }

  // A saved state put back (snapshot restore); the caller checked `info`.
  void Restore(const vcpu_runstate_info& info) { info_ = info; }

  // Guest-virtual address of the registered area (0 = none), written in the latched layout.
  uint64_t area_gva = 0;

 private:
  void Account(uint64_t now) {
    if (now > info_.state_entry_time && info_.state >= 0 && info_.state < 4) {
      info_.time[info_.state] += now - info_.state_entry_time;
    }
    info_.state_entry_time = std::max(now, info_.state_entry_time);
  }
  vcpu_runstate_info info_{};
};

}  // namespace xenkvm::xen
