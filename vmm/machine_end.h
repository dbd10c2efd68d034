// How a run ends, as a value: why (a guest shutdown with Xen's SHUTDOWN_* code, a triple fault,
// a KVM or host failure), one line for the user, and whether some vCPU threads could not be
// stopped (then the process must leave without joining them).
#pragma once

#include <cstdint>
#include <string>

namespace xenkvm::vmm {

enum class EndReason {
  kPoweroff,       // SCHEDOP_shutdown poweroff
  kReboot,         // SCHEDOP_shutdown reboot
  kCrash,          // SCHEDOP_shutdown crash (or another reason)
  kSuspend,        // SCHEDOP_shutdown suspend (a save would follow in Xen's toolstack)
  kSignal,         // the user asked the VMM to stop (SIGINT/SIGTERM)
  kTripleFault,    // KVM_EXIT_SHUTDOWN
  kInternalError,  // KVM_EXIT_INTERNAL_ERROR / FAIL_ENTRY / unexpected exit
  kHostError,      // a host call (ioctl) failed
  kStuck,          // the guest powered off but vCPU threads did not stop
  kMigrated,       // the guest was migrated and runs at the destination
};

struct MachineEnd {
  EndReason reason = EndReason::kCrash;
  uint32_t xen_reason = 0;     // SHUTDOWN_* when reason is a guest shutdown
  std::string message;         // one line for the user
  bool threads_stuck = false;  // vCPU threads still inside KVM_RUN: exit without joining
};

// The end a guest asks for with SCHEDOP_shutdown (or KVM reports as a system event).
MachineEnd GuestShutdownEnd(uint32_t xen_reason);

}  // namespace xenkvm::vmm
