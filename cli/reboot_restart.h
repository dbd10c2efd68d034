// `--on-reboot=restart` (xl's on_reboot default): a guest that reboots is started again from
// its kernel, in the same process (same pid, as an operator or supervisor sees it). The VMM
// execs itself with its own arguments: every thread, vCPU fd, mapping and backend of the old
// boot goes at once, and the new boot starts from a clean slate, as xl builds a new domain.
// File descriptors above stderr are closed on the exec, so nothing grows from boot to boot; the
// --timeout deadline carries over (XENKVM_RUN_DEADLINE), so a guest that reboots in a loop still
// ends when its time is up.
#pragma once

#include <optional>

#include "abi/result.h"

namespace xenkvm::cli {

// Call once at the start of a run: remembers `argv` for the restart and returns the seconds
// left of a deadline an earlier boot of this process set (nullopt: first boot, or none).
std::optional<double> StartOfRun(char** argv);

// The number of restarts so far in this process (0 on the first boot).
unsigned RestartCount();

// Execs this VMM again with the arguments StartOfRun saw; `timeout_s` (0 = none) counted from
// the first boot's start. Returns only on failure.
Result<> RestartAfterReboot(double timeout_s);

}  // namespace xenkvm::cli
