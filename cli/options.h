// The xenkvm command line (CLI11): `xenkvm run [options] [GUEST.elf]`; further subcommands
// (restore, ctl) add a Kind and their own options struct here.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/disk_spec.h"
#include "vmm/machine.h"

namespace xenkvm::cli {

// Exit codes (also in --help): the guest's end, or why the VMM could not run it.
constexpr int kExitPoweroff = 0;
constexpr int kExitHostError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCrash = 3;
constexpr int kExitReboot = 4;
constexpr int kExitTripleFault = 5;
constexpr int kExitInternalError = 6;
constexpr int kExitSuspend = 7;
constexpr int kExitTimeout = 124;
constexpr int kExitSignalBase = 128;  // + signal number (130 SIGINT, 143 SIGTERM)

struct RunOptions {
  vmm::MachineConfig machine;
  double timeout_s = 0;  // 0 = none
  double grace_s = 5;    // after SIGINT/SIGTERM, force the end after this long
  bool vcpus_given = false;
  bool stats = false;
  std::string trace_path;            // --trace: Chrome trace-event JSON written here
  uint32_t trace_events = 1u << 16;  // kept per host thread; later ones are counted
  uint64_t max_image_mib = 512;
  std::string guest;                  // empty: the bundled demo guest
  std::string initrd;                 // --initrd: module 0 (xl's ramdisk=); empty: none
  std::vector<DiskSpec> disks;        // --disk, in order
  std::string console_io = "stdout";  // cli/console_targets.h
  std::string console = "stdio";
  std::string control_path;  // --control: serve the control socket there (docs/control.md)
  // `xenkvm restore FILE [run's options]`: `guest` is a snapshot file to resume
  // (docs/snapshots.md); --vcpus and --memory come from it.
  bool restore = false;
  // `xenkvm restore --incoming URI [run's options]`: the guest comes from a live migration
  // (docs/migration.md): unix:PATH (listen there, one connection) or - (stdin and stdout).
  std::string incoming;
  bool paused = false;  // --paused: the guest waits for `ctl resume` (as `xl restore -p`)
  // --on-reboot (xl's on_reboot): restart the guest from its kernel (cli/reboot_restart.h), or
  // exit with kExitReboot.
  bool restart_on_reboot = true;
};

// `xenkvm ctl SOCKET COMMAND [ARGS]`.
struct CtlOptions {
  std::string socket;
  std::string command;
  std::vector<std::string> args;
};

struct Command {
  enum class Kind { kExit, kRun, kCtl } kind = Kind::kExit;
  int exit_code = 0;  // for kExit: help printed (0) or a usage error (kExitUsage)
  RunOptions run;
  CtlOptions ctl;
};

// Parses argv; help goes to `out`, one error line to `err`.
Command ParseCommandLine(int argc, const char* const* argv, FILE* out, FILE* err);

}  // namespace xenkvm::cli
