// Command-line parsing with CLI11; see options.h.
#include "cli/options.h"

#include <CLI/CLI.hpp>
#include <cctype>
#include <cmath>
#include <map>

#include "cli/console_targets.h"
#include "control/protocol.h"

namespace xenkvm::cli {

namespace {
// Longer than any run we mean to bound; larger values (1e300, inf) would overflow the clock.
constexpr double kMaxSeconds = 365.0 * 24 * 3600;

// CLI::Range lets NaN through (it only compares); this doesn't.
CLI::Validator Seconds(double min) {
  return CLI::Validator(
      [min](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end != '\0' || !std::isfinite(v) || v < min || v > kMaxSeconds) {
          return "seconds must be a finite number in [" + std::to_string(static_cast<int>(min)) +
                 ", " + std::to_string(static_cast<long>(kMaxSeconds)) + "]";
        }
        return {};
      },
      "SECONDS");
}

const char kExitCodes[] =
    "Exit codes: 0 poweroff, 3 crash, 4 reboot, 5 triple fault, 6 emulation error, 7 suspend,\n"
    "124 timeout, 128+N ended by signal N (130 SIGINT, 143 SIGTERM), 1 host error, 2 usage.\n"
    "`xenkvm restore SNAPSHOT [run's options]` resumes a guest saved with `xenkvm ctl SOCKET save\n"
    "FILE` (docs/snapshots.md); `xenkvm restore --incoming unix:PATH|- [run's options]` receives\n"
    "a guest sent with `xenkvm ctl SOCKET migrate URI` (docs/migration.md).";
}  // namespace

Command ParseCommandLine(int argc, const char* const* argv, FILE* out, FILE* err) {
  Command cmd;
  // `restore FILE [options]` is `run` with a snapshot in the guest's place: the same host-side
  // options (console, disks, control socket, limits), parsed by the same code.
  std::vector<const char*> args(argv, argv + argc);
  if (argc >= 2 && std::string_view(argv[1]) == "restore") {
    args[1] = "run";
    cmd.run.restore = true;
  }
  argc = int(args.size());
  argv = args.data();
  RunOptions& o = cmd.run;
  vmm::ResourceLimits& limits = o.machine.limits;
  CLI::App app{"xenkvm: Xen event channels and the Xen HVM/PVH platform on plain KVM", "xenkvm"};
  app.footer(kExitCodes);
  app.require_subcommand(1, 1);
  CLI::App* run =
      app.add_subcommand("run",
                         "Boot a 64-bit Xen PVH guest (an ELF with XEN_ELFNOTE_PHYS32_ENTRY, or a "
                         "Linux bzImage such as /boot/vmlinuz-*)");
  run->add_option("--vcpus", o.machine.vcpus, "vCPUs (default 1; 4 for the demo guest)")
      ->check(CLI::Range(1, 64));
  run->add_option("--memory", o.machine.memory_mib,
                  "guest RAM in MiB (below the LAPIC at 3.98 GiB)")
      ->check(CLI::Range(2, 3072))
      ->capture_default_str();
  run->add_option("--cmdline", o.machine.cmdline, "guest command line (hvm_start_info)");
  run->add_option("--initrd", o.initrd,
                  "initial ramdisk given to the kernel as hvm_start_info module 0 (xl's "
                  "ramdisk=)")
      ->type_name("FILE");
  run->add_option("--timeout", o.timeout_s, "end the run after SECONDS (0 = none)")
      ->check(Seconds(0));
  run->add_option("--grace", o.grace_s,
                  "SIGINT/SIGTERM write control/shutdown = poweroff; end the run after SECONDS "
                  "if the guest has not powered off")
      ->check(Seconds(0))
      ->capture_default_str();
  run->add_flag(
      "--stats", o.stats,
      "print event channel, hypercall and ring counters and latency histograms at every end\n"
      "(timeouts and forced ends included)");
  run->add_option("--trace", o.trace_path,
                  "write a Chrome trace-event / Perfetto JSON trace to FILE (docs/trace.md)");
  run->add_option("--trace-events", o.trace_events,
                  "events kept per thread in the trace (later ones are counted as dropped)")
      ->check(CLI::Range(1u, 1u << 24))
      ->capture_default_str();
  run->add_flag("--quiet{false}", o.machine.log_stages, "don't print stage markers");
  run->add_flag("--paused", o.paused,
                "start with the guest paused until `xenkvm ctl SOCKET resume` (as `xl restore "
                "-p`); needs --control");
  run->add_flag("--console-raw", o.machine.console_raw,
                "pass guest text unfiltered (terminal escape sequences included)");
  run->add_option("--console-io", o.console_io,
                  "Xen's console (console_io, debugcon; `xl dmesg`): stdout, stderr, file:PATH "
                  "or none")
      ->check(CLI::Validator(CheckConsoleIoTarget, "TARGET"))
      ->capture_default_str();
  run->add_option("--console", o.console,
                  "the guest's PV console ring (`xl console`): stdio (output to stdout, input "
                  "from stdin, raw while a terminal; Ctrl-C still stops), file:PATH or none")
      ->check(CLI::Validator(CheckConsoleTarget, "TARGET"))
      ->capture_default_str();
  run->add_option("--name", o.machine.name, "domain name (xenstore)")->capture_default_str();
  run->add_option("--max-image", o.max_image_mib, "largest guest image file read, MiB")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  run->add_option("--log-rate", limits.log_per_second,
                  "guest-triggered log lines per second (0 = none)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  run->add_option("--console-io-max", limits.console_io_max_bytes,
                  "bytes shown per console_io write")
      ->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  run->add_option("--backend-queue", limits.backend_queue_max,
                  "outstanding requests per VMM backend")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  std::vector<std::string> disk_specs;
  run->add_option("--disk", disk_specs,
                  "PV disk PATH[,ro][,vdev=xvda] (repeatable; vdev defaults to xvda, xvdb, ...)")
      ->allow_extra_args(false)
      ->type_name("SPEC");
  const std::map<std::string, vmm::ApStart> ap_modes{{"auto", vmm::ApStart::kAuto},
                                                     {"vcpuop", vmm::ApStart::kXenVcpuOp},
                                                     {"init-sipi", vmm::ApStart::kInitSipi}};
  run->add_option("--ap-start", o.machine.ap_start,
                  "how vCPUs 1.. start: init-sipi (wait for the guest's INIT-SIPI, as Linux "
                  "starts them), vcpuop (offline until VCPUOP_initialise/up) or auto (init-sipi "
                  "for a Linux image, by its XEN_ELFNOTE_GUEST_OS; docs/acpi-smp.md)")
      ->transform(CLI::CheckedTransformer(ap_modes, CLI::ignore_case).description(""))
      ->type_name("auto|vcpuop|init-sipi")
      ->default_str("auto");
  const std::map<std::string, bool> reboot_modes{{"restart", true}, {"exit", false}};
  run->add_option("--on-reboot", o.restart_on_reboot,
                  "a guest reboot (SCHEDOP_shutdown reboot, ACPI reset) starts the guest again "
                  "from its kernel in this process (restart, as xl's on_reboot default) or ends "
                  "the run with exit code 4 (exit); a restored guest always exits")
      ->transform(CLI::CheckedTransformer(reboot_modes, CLI::ignore_case).description(""))
      ->type_name("restart|exit")
      ->default_str("restart");
  run->add_flag("--test-device", o.machine.test_device,
                "add the MSI test device (MMIO page at 0xfe800000; docs/library.md)");
  run->add_option("--control", o.control_path,
                  "serve JSON requests on a unix socket at PATH (owner-only; docs/control.md; "
                  "the client is `xenkvm ctl`)")
      ->type_name("PATH");
  CLI::Option* incoming =
      run->add_option("--incoming", o.incoming,
                      "(restore only) receive a live migration: unix:PATH (listen there, owner-"
                      "only, one connection) or - (stdin and stdout)")
          ->type_name("URI");
  run->add_option("guest", o.guest,
                  "guest image: a PVH ELF or a bzImage (gzip, xz, zstd, lz4, bzip2, lzma or lzo "
                  "payload); default: the bundled demo guest");
  CLI::App* ctl = app.add_subcommand(
      "ctl", "Send one request to a running VMM's control socket and print the reply");
  std::string ctl_help = "Commands:\n";
  for (const control::CommandSpec& c : control::Commands()) {
    std::string usage = c.name;
    for (size_t i = 0; i < c.fields.size(); ++i) {
      std::string field = c.fields[i];
      for (char& ch : field) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      usage += i < c.required ? " " + field : " [" + field + "]";
    }
    ctl_help +=
        "  " + usage + std::string(usage.size() < 26 ? 26 - usage.size() : 1, ' ') + c.help + "\n";
  }
  ctl->footer(ctl_help + "Exit code: 0 the reply says ok, 1 it does not (or no VMM), 2 usage.");
  ctl->add_option("socket", cmd.ctl.socket, "the VMM's control socket (run --control)")->required();
  ctl->add_option("command", cmd.ctl.command, "the request")->required();
  ctl->add_option("args", cmd.ctl.args, "the command's arguments");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), out);  // the selected subcommand's help, if any
    cmd.exit_code = 0;
    return cmd;
  } catch (const CLI::ParseError& e) {
    std::fprintf(err, "xenkvm: %s (see xenkvm %s --help)\n", e.what(),
                 ctl->parsed() ? "ctl" : "run");
    cmd.exit_code = kExitUsage;
    return cmd;
  }
  if (ctl->parsed()) {
    cmd.kind = Command::Kind::kCtl;
    return cmd;
  }
  // Each disk may take up to 4 event-channel endpoints of domain 0 (one per queue).
  constexpr size_t kMaxDisks = 8;
  if (disk_specs.size() > kMaxDisks) {
    std::fprintf(err, "xenkvm: at most %zu --disk (see xenkvm run --help)\n", kMaxDisks);
    cmd.exit_code = kExitUsage;
    return cmd;
  }
  for (size_t i = 0; i < disk_specs.size(); ++i) {
    auto disk = ParseDiskSpec(disk_specs[i], i);
    if (!disk) {
      std::fprintf(err, "xenkvm: %s: %s (see xenkvm run --help)\n", disk_specs[i].c_str(),
                   disk.error().message);
      cmd.exit_code = kExitUsage;
      return cmd;
    }
    for (const DiskSpec& other : o.disks) {
      if (other.devid == disk->devid) {
        std::fprintf(err, "xenkvm: %s: vdev %s is given twice (see xenkvm run --help)\n",
                     disk_specs[i].c_str(), disk->vdev.c_str());
        cmd.exit_code = kExitUsage;
        return cmd;
      }
    }
    o.disks.push_back(std::move(*disk));
  }
  if (incoming->count() > 0 && (!o.restore || !o.guest.empty())) {
    std::fprintf(err, "xenkvm: --incoming goes with restore and no FILE (see xenkvm run --help)\n");
    cmd.exit_code = kExitUsage;
    return cmd;
  }
  if (o.restore && !o.initrd.empty()) {
    std::fprintf(err, "xenkvm: --initrd goes with run, not restore (see xenkvm run --help)\n");
    cmd.exit_code = kExitUsage;
    return cmd;
  }
  if (o.restore && o.incoming.empty() && o.guest.empty()) {
    std::fprintf(err, "xenkvm: restore needs a FILE or --incoming URI (see xenkvm run --help)\n");
    cmd.exit_code = kExitUsage;
    return cmd;
  }
  o.vcpus_given = run->count("--vcpus") > 0;
  cmd.kind = Command::Kind::kRun;
  return cmd;
}

}  // namespace xenkvm::cli
