// xenkvm: boot a 64-bit Xen PVH guest on plain KVM (no kernel Xen support) and run it to
// shutdown. Thin by design: parse arguments (cli/options), run vmm::Machine, map its end to an
// exit code (listed in options.h and `xenkvm run --help`).
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/console_targets.h"
#include "cli/control.h"
#include "cli/image.h"
#include "cli/options.h"
#include "cli/reboot_restart.h"
#include "cli/signals.h"
#include "control/server.h"
#include "snapshot/endpoint.h"
#include "trace/histogram.h"
#include "trace/trace.h"
#include "vmm/machine.h"

namespace {

using namespace xenkvm::cli;
using xenkvm::vmm::EndReason;

// The demo guest: where this build put it, else next to an installed binary.
std::string DemoGuestPath() {
  if (access(XENKVM_DEMO_GUEST, R_OK) == 0) return XENKVM_DEMO_GUEST;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    dir.resize(dir.rfind('/'));
    for (const char* rel : {"/../guests/demo.elf", "/demo.elf"}) {
      std::string p = dir + rel;
      if (access(p.c_str(), R_OK) == 0) return p;
    }
  }
  return XENKVM_DEMO_GUEST;
}

// The Machine whose counters --stats prints, for every end: normal, timeout, forced.
std::atomic<xenkvm::vmm::Machine*> watched{nullptr};
std::atomic<bool> want_stats{false};
std::atomic<bool> stats_printed{false};
// The latency histograms --stats prints (installed before the machine's threads start).
std::atomic<const xenkvm::trace::Stats*> latency_stats{nullptr};

void PrintStats(xenkvm::vmm::Machine& m) {
  std::fprintf(stderr, "xenkvm: KVM: rip at a port-I/O exit %s; hypercalls: %s",
               xenkvm::kvm::PioExitRipName(m.pio_exit_rip()),
               xenkvm::vmm::HypercallPathName(m.hypercall_path()));
  if (m.hypercall_path() == xenkvm::vmm::HypercallPath::kRewritten)
    std::fprintf(stderr, " (%zu sites)", m.rewritten_hypercall_sites());
  std::fprintf(stderr, "\nxenkvm: event channel counters\n");
  std::fprintf(stderr, "  %6s %10s %10s %10s %10s %10s\n", "port", "sent", "delivered", "coalesced",
               "masked", "deferred");
  for (const auto& [port, c] : m.engine().AllCounters()) {
    std::fprintf(
        stderr, "  %6u %10llu %10llu %10llu %10llu %10llu\n", port,
        static_cast<unsigned long long>(c.sent), static_cast<unsigned long long>(c.delivered),
        static_cast<unsigned long long>(c.coalesced), static_cast<unsigned long long>(c.masked),
        static_cast<unsigned long long>(c.deferred));
  }
  std::fprintf(stderr, "xenkvm: hypercalls by number:");
  for (const auto& [nr, count] : m.domain().HypercallCounts()) {
    std::fprintf(stderr, " %u:%llu", nr, static_cast<unsigned long long>(count));
  }
  std::fprintf(stderr, "\nxenkvm: latency histograms (bucket upper bounds, ns)\n");
  if (const xenkvm::trace::Stats* latency = latency_stats.load()) {
    latency->hypercall.Print(stderr, "hypercall service");
    latency->send_to_upcall.Print(stderr, "send -> upcall injected");
  }
  const auto disks = m.DiskStatistics();
  if (!disks.empty()) {
    std::fprintf(stderr, "xenkvm: disks\n");
    std::fprintf(stderr, "  %-6s %10s %10s %10s %14s %14s %8s  %s\n", "vdev", "requests", "reads",
                 "writes", "read bytes", "written bytes", "errors", "path");
  }
  for (const auto& d : disks) {
    std::fprintf(stderr, "  %-6s %10llu %10llu %10llu %14llu %14llu %8llu  %s\n", d.vdev.c_str(),
                 static_cast<unsigned long long>(d.stats.requests),
                 static_cast<unsigned long long>(d.stats.reads),
                 static_cast<unsigned long long>(d.stats.writes),
                 static_cast<unsigned long long>(d.stats.read_bytes),
                 static_cast<unsigned long long>(d.stats.write_bytes),
                 static_cast<unsigned long long>(d.stats.errors), d.path.c_str());
  }
  const auto con = m.ConsoleCounters();
  std::fprintf(
      stderr,
      "xenkvm: console ring: out %llu bytes, in %llu bytes, %llu notifies, %llu bad indexes\n",
      static_cast<unsigned long long>(con.out_bytes), static_cast<unsigned long long>(con.in_bytes),
      static_cast<unsigned long long>(con.notifies),
      static_cast<unsigned long long>(con.bad_indexes));
  const auto xs = m.XenstoreCounters();
  std::fprintf(stderr,
               "xenkvm: xenstore ring: requests %llu bytes, replies %llu bytes, %llu notifies, "
               "%llu errors, %llu reconnections\n",
               static_cast<unsigned long long>(xs.requests_bytes),
               static_cast<unsigned long long>(xs.reply_bytes),
               static_cast<unsigned long long>(xs.notifies),
               static_cast<unsigned long long>(xs.errors),
               static_cast<unsigned long long>(xs.reconnections));
}

// Once per process. Before a forced _exit the counters are read from another thread while vCPUs
// may still run (or hold a lock forever): a helper thread prints, we wait at most a second.
void PrintStatsOnce() {
  if (!want_stats.load() || stats_printed.exchange(true)) return;
  xenkvm::vmm::Machine* m = watched.load(std::memory_order_acquire);
  if (m != nullptr) PrintStats(*m);
}

void PrintStatsBeforeForcedEnd() {
  if (!want_stats.load() || watched.load() == nullptr) return;
  static std::atomic<bool> done{false};
  std::thread([] {
    PrintStatsOnce();
    done = true;
  }).detach();
  for (int i = 0; i < 100 && !done.load(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

int ExitCode(EndReason reason, int signal) {
  switch (reason) {
    case EndReason::kPoweroff:
    case EndReason::kMigrated:
      return kExitPoweroff;
    case EndReason::kReboot:
      return kExitReboot;
    case EndReason::kCrash:
      return kExitCrash;
    case EndReason::kSuspend:
      return kExitSuspend;
    case EndReason::kSignal:
      return kExitSignalBase + signal;
    case EndReason::kTripleFault:
      return kExitTripleFault;
    case EndReason::kInternalError:
      return kExitInternalError;
    case EndReason::kHostError:
    case EndReason::kStuck:
      return kExitHostError;
  }
  return kExitHostError;
}

// `restore --incoming URI`: the stream the guest comes in on (docs/migration.md).
xenkvm::Result<xenkvm::snapshot::Channel> OpenIncoming(const std::string& uri) {
  if (uri == "-") return xenkvm::snapshot::StdioStream();
  auto listener = xenkvm::snapshot::StreamListener::Listen(uri);
  if (!listener) return tl::unexpected(listener.error());
  std::fprintf(stderr, "xenkvm: waiting for a migration on %s\n", uri.c_str());
  return listener->Accept(std::chrono::milliseconds(-1));  // --timeout and signals end the wait
}

int ExitCodeFor(const xenkvm::Error& e) {
  return e.kind == xenkvm::ErrorKind::kHost ? kExitHostError : kExitUsage;
}

int Run(RunOptions& o, TerminalGuard& terminal, SignalWatcher& signals, char** argv) {
  want_stats = o.stats;
  // After a guest reboot this process runs again from here (cli/reboot_restart.h).
  const double timeout_given = o.timeout_s;
  if (const std::optional<double> left = xenkvm::cli::StartOfRun(argv)) o.timeout_s = *left;
  if (xenkvm::cli::RestartCount() != 0)
    std::fprintf(stderr, "xenkvm: boot %u of this guest (it rebooted)\n",
                 xenkvm::cli::RestartCount() + 1);
  // The watchdog runs from here, before waiting for a migration or reading and loading the
  // image: a vCPU may hang inside KVM_RUN (e.g. a raw vmcall on PVM) and the process may not
  // react to SIGTERM, so it ends the process itself.
  if (o.timeout_s > 0) {
    std::thread([t = o.timeout_s, &terminal] {
      std::this_thread::sleep_for(std::chrono::duration<double>(t));
      xenkvm::vmm::Machine* m = watched.load(std::memory_order_acquire);
      std::fprintf(stderr, "xenkvm: timeout after %g s (last stage %u)\n", t,
                   m ? m->LastStage() : 0);
      PrintStatsBeforeForcedEnd();
      terminal.Restore();
      std::fflush(nullptr);
      _exit(kExitTimeout);
    }).detach();
  }

  std::optional<xenkvm::snapshot::Channel> stream;
  if (!o.incoming.empty()) {
    auto channel = OpenIncoming(o.incoming);
    if (!channel) {
      std::fprintf(stderr, "xenkvm: --incoming %s: %s\n", o.incoming.c_str(),
                   xenkvm::Describe(channel.error()).c_str());
      return ExitCodeFor(channel.error());
    }
    stream.emplace(std::move(*channel));
    auto shape = xenkvm::vmm::Machine::ReceiveShape(*stream);
    if (!shape) {
      std::fprintf(stderr, "xenkvm: migration: %s\n", xenkvm::Describe(shape.error()).c_str());
      return ExitCodeFor(shape.error());
    }
    o.machine.vcpus = shape->vcpus;
    o.machine.memory_mib = shape->memory_mib;
  } else if (o.restore) {
    auto shape = xenkvm::vmm::Machine::ReadSnapshotShape(o.guest);
    if (!shape) {
      std::fprintf(stderr, "xenkvm: %s: %s\n", o.guest.c_str(),
                   xenkvm::Describe(shape.error()).c_str());
      return kExitUsage;
    }
    o.machine.vcpus = shape->vcpus;
    o.machine.memory_mib = shape->memory_mib;
  } else if (o.guest.empty()) {
    // The demo shows event channels across vCPUs (guests/ declares it for 4): give it four.
    o.guest = DemoGuestPath();
    if (!o.vcpus_given) o.machine.vcpus = 4;
  }
  // Tracing and latency histograms are installed before the machine's threads start and stay
  // alive to the end of the process (a stuck vCPU thread may still record).
  static xenkvm::trace::Stats latency;
  if (o.stats) {
    xenkvm::trace::SetActiveStats(&latency);
    latency_stats.store(&latency);
  }
  std::FILE* trace_file = nullptr;
  xenkvm::trace::Recorder* recorder = nullptr;
  if (!o.trace_path.empty()) {
    trace_file = std::fopen(o.trace_path.c_str(), "w");
    if (!trace_file) {
      std::fprintf(stderr, "xenkvm: cannot write the trace %s: %s\n", o.trace_path.c_str(),
                   std::strerror(errno));
      return kExitHostError;
    }
    recorder = new xenkvm::trace::Recorder(o.trace_events);  // never freed: see above
    recorder->NameThread("main");
    xenkvm::trace::SetActive(recorder);
  }

  auto image = o.restore ? xenkvm::Result<std::vector<uint8_t>>(std::vector<uint8_t>{})
                         : ReadImage(o.guest, o.max_image_mib << 20);
  if (!image) {
    std::fprintf(stderr, "xenkvm: %s: %s\n", o.guest.c_str(), image.error().message);
    return kExitHostError;
  }
  // The initrd goes in guest RAM whole, so RAM bounds what is read.
  auto initrd = o.initrd.empty()
                    ? xenkvm::Result<std::vector<uint8_t>>(std::vector<uint8_t>{})
                    : ReadImage(o.initrd, o.machine.memory_mib << 20, ImageKind::kInitrd);
  if (!initrd) {
    std::fprintf(stderr, "xenkvm: %s: %s\n", o.initrd.c_str(), initrd.error().message);
    return kExitHostError;
  }
  for (const DiskSpec& disk : o.disks) {
    xenkvm::backends::VbdConfig vbd;
    vbd.disk.path = disk.path;
    vbd.disk.read_only = disk.read_only;
    vbd.vdev = disk.vdev;
    vbd.devid = disk.devid;
    o.machine.disks.push_back(std::move(vbd));
  }
  ConsoleTargets consoles;  // outlives the Machine (it writes to these descriptors)
  if (auto r = consoles.Open(o.console_io, o.console, &o.machine.console); !r) {
    std::fprintf(stderr, "xenkvm: console: %s\n", xenkvm::Describe(r.error()).c_str());
    return kExitHostError;
  }
  auto machine = xenkvm::vmm::Machine::Create(o.machine);
  if (!machine) {
    std::fprintf(stderr, "xenkvm: cannot create the VM: %s\n",
                 xenkvm::Describe(machine.error()).c_str());
    return kExitHostError;
  }
  xenkvm::vmm::Machine& m = **machine;
  watched.store(&m, std::memory_order_release);
  signals.Attach(&m);
  if (stream) {
    if (auto r = m.ReceiveMigration(*stream); !r) {
      std::fprintf(stderr, "xenkvm: migration: %s\n", xenkvm::Describe(r.error()).c_str());
      return ExitCodeFor(r.error());
    }
    // The source waits for this to learn that the guest runs here (its downtime ends).
    m.NotifyWhenResumed([&stream](const xenkvm::Result<>& resumed) {
      if (resumed) {
        (void)stream->Send(xenkvm::snapshot::kResumedFrame, {});
      } else {
        const std::string line = xenkvm::Describe(resumed.error());
        (void)stream->Send(xenkvm::snapshot::kFailFrame, std::as_bytes(std::span(line)));
      }
      stream.reset();
    });
  } else if (o.restore) {
    const auto start = std::chrono::steady_clock::now();
    if (auto r = m.Restore(o.guest); !r) {
      std::fprintf(stderr, "xenkvm: %s: %s\n", o.guest.c_str(),
                   xenkvm::Describe(r.error()).c_str());
      return r.error().kind == xenkvm::ErrorKind::kHost ? kExitHostError : kExitUsage;
    }
    std::fprintf(stderr, "xenkvm: restored %s in %.1f ms\n", o.guest.c_str(),
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  } else if (auto r = m.LoadGuest(*image, *initrd); !r) {
    std::fprintf(stderr, "xenkvm: cannot load %s: %s\n", o.guest.c_str(), r.error().message);
    return kExitHostError;
  }
  image->clear();
  image->shrink_to_fit();
  initrd->clear();
  initrd->shrink_to_fit();

  // The control socket serves from before the first vCPU runs until the run ends.
  xenkvm::cli::MachineControl control_target(m, signals, latency_stats.load());
  xenkvm::control::Dispatcher dispatcher(control_target);
  std::unique_ptr<xenkvm::control::Server> control_server;
  if (!o.control_path.empty()) {
    auto server = xenkvm::control::Server::Listen(o.control_path, dispatcher);
    if (!server) {
      std::fprintf(stderr, "xenkvm: --control %s: %s\n", o.control_path.c_str(),
                   xenkvm::Describe(server.error()).c_str());
      return kExitHostError;
    }
    control_server = std::move(*server);
  }

  if (o.paused) {
    if (o.control_path.empty()) {
      std::fprintf(stderr, "xenkvm: --paused needs --control (nothing could resume the guest)\n");
      return kExitUsage;
    }
    if (auto r = m.Pause(); !r) {
      std::fprintf(stderr, "xenkvm: --paused: %s\n", xenkvm::Describe(r.error()).c_str());
      return kExitHostError;
    }
  }
  if (o.machine.console.input_fd == STDIN_FILENO) terminal.MakeRaw();
  xenkvm::vmm::MachineEnd end = m.Run();
  control_server.reset();
  terminal.Restore();
  PrintStatsOnce();
  if (recorder) {
    recorder->WriteJson(trace_file);
    const bool ok = std::fclose(trace_file) == 0;
    if (!ok) std::fprintf(stderr, "xenkvm: writing the trace %s failed\n", o.trace_path.c_str());
    if (const uint64_t dropped = recorder->Dropped())
      std::fprintf(stderr, "xenkvm: trace: %llu events dropped (over --trace-events per thread)\n",
                   static_cast<unsigned long long>(dropped));
  }
  if (end.reason == EndReason::kReboot && o.restart_on_reboot) {
    if (o.restore || !o.incoming.empty()) {
      std::fprintf(stderr,
                   "xenkvm: the guest rebooted; a restored guest has no kernel image here to "
                   "start again: exiting\n");
    } else {
      std::fprintf(stderr, "xenkvm: the guest rebooted: starting it again (--on-reboot=restart)\n");
      terminal.Restore();
      // The old boot's threads and state end with this image; nothing of it is torn down first.
      const auto r = xenkvm::cli::RestartAfterReboot(timeout_given);
      std::fprintf(stderr, "xenkvm: cannot restart the guest: %s\n",
                   xenkvm::Describe(r.error()).c_str());
    }
  }
  const int code = ExitCode(end.reason, signals.signal());
  if (code != 0 || end.reason == EndReason::kMigrated)
    std::fprintf(stderr, "xenkvm: %s (last stage %u)\n", end.message.c_str(), m.LastStage());
  terminal.Restore();
  std::fflush(nullptr);
  // Threads stuck in KVM_RUN can't be joined; leave without destructors in that case.
  if (end.threads_stuck) _exit(code);
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  Command cmd = ParseCommandLine(argc, argv, stdout, stderr);
  if (cmd.kind == Command::Kind::kExit) return cmd.exit_code;
  if (cmd.kind == Command::Kind::kCtl)
    return RunCtl(cmd.ctl.socket, cmd.ctl.command, cmd.ctl.args, stdout, stderr);
  // Before any other thread exists: they all inherit the blocked stop signals.
  TerminalGuard terminal;
  SignalWatcher signals(cmd.run.grace_s, &terminal, PrintStatsBeforeForcedEnd);
  return Run(cmd.run, terminal, signals, argv);
}
