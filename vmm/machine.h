// The xenkvm virtual machine: guest RAM, the KVM VM and one thread per vCPU, the event-channel
// engine and Xen domain, upcall injection, timers, console and the echo backend. Implements
// xen::Platform (the mechanism under the hypercall layer) and VcpuHost (what a vCPU thread
// needs). Boots a PVH guest and runs it to its end.
//
// Threads: Create/LoadGuest/Run on the main thread; Platform and VcpuHost methods from vCPU
// threads; Stop, RequestShutdown and the counters from any thread; the console input thread
// feeds the PV console ring. Locks: end_mutex_ guards the end state; console_mutex_ serialises
// the output streams (taken under the console ring's lock, whose sink writes). Neither is held
// while taking another of ours; per-vCPU state and its lock live in VcpuRunner, the retry
// thread's in UpcallInjector, the rings' in backends/. pause_mutex_ serialises Pause/Resume and
// is taken before the runners' and the timers' locks.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "backends/console_ring.h"
#include "backends/vbd.h"
#include "backends/xenstore_ring.h"
#include "evtchn/engine.h"
#include "evtchn/eventfd_router.h"
#include "kvm/pio_exit_probe.h"
#include "kvm/system.h"
#include "kvm/vcpu_snapshot.h"
#include "kvm/vm.h"
#include "mem/dirty_bitmap.h"
#include "mem/guest_memory.h"
#include "snapshot/format.h"
#include "snapshot/stream.h"
#include "vmm/echo_backend.h"
#include "vmm/guest_clock.h"
#include "vmm/machine_end.h"
#include "vmm/msi_test_device.h"
#include "vmm/pvh_loader.h"
#include "vmm/terminal_filter.h"
#include "vmm/timers.h"
#include "vmm/vcpu_host.h"
#include "xen/domain.h"
#include "xen/hypercall_page.h"
#include "xen/platform.h"
#include "xenstore/store.h"

namespace xenkvm::vmm {

class VcpuRunner;
class UpcallInjector;

// What one guest may make the VMM spend (like xenstored's quotas); the CLI exposes each.
// Xenstore quotas (entries, size, watches, transactions) join here with the xenstore server.
struct ResourceLimits {
  uint32_t log_per_second = 5;  // guest-triggered log lines (after a burst)
  uint32_t log_burst = 20;
  uint32_t console_io_max_bytes = 64 * 1024;  // shown per CONSOLEIO_write call
  uint32_t backend_queue_max = 1024;          // outstanding requests per VMM backend
};

// Where guest text goes and where console input comes from (file descriptors the caller owns
// and keeps open for the Machine's life; -1 = nowhere / no input).
struct ConsoleConfig {
  int xen_fd = 1;    // Xen's console: console_io and debugcon (what `xl dmesg` shows)
  int ring_fd = 1;   // the guest's PV console ring output (what `xl console` shows)
  int input_fd = 0;  // read into the ring's input side until EOF
};

// How the guest's hypercalls reach the VMM (docs/hypercall_sites.md); --stats and the control
// socket's status name it. The hypercall page's `out` stubs (and an inline `out`) work in all.
enum class HypercallPath : uint8_t {
  kPagePort,   // only those: a vmcall/vmmcall gets KVM's -KVM_ENOSYS (-1000)
  kRewritten,  // plus Linux's vmcall/vmmcall sites, rewritten to `out` as the image was loaded
  kIntercept,  // plus every vmcall/vmmcall, through KVM_EXIT_XEN (the host has CONFIG_KVM_XEN)
};
const char* HypercallPathName(HypercallPath path);  // "page+port", "rewritten", "intercept"

// How vCPUs 1..N-1 start (docs/acpi-smp.md), chosen once when the image is loaded.
enum class ApStart : uint8_t {
  kAuto,       // kInitSipi for an image whose XEN_ELFNOTE_GUEST_OS is "linux", else kXenVcpuOp
  kXenVcpuOp,  // offline until the guest's VCPUOP_initialise + VCPUOP_up (our test guests, XTF)
  kInitSipi,   // in KVM's wait-for-SIPI state: the guest's BSP starts them through its LAPIC
};

struct MachineConfig {
  uint32_t vcpus = 1;
  uint64_t memory_mib = 128;
  std::string cmdline;
  std::string name = "guest";  // xenstore /local/domain/<id>/name
  bool log_stages = true;      // print each stage marker (port 0xe4) on stderr
  bool console_raw = false;    // pass guest text unfiltered (terminal escapes included)
  ConsoleConfig console;
  ResourceLimits limits;
  std::vector<backends::VbdConfig> disks;  // PV disks (--disk), in order
  bool test_device = false;                // --test-device: the MSI test device (abi/platform.h)
  // Use the host kernel's Xen hypercall intercept where it has one, else rewrite the loaded
  // image's Linux hypercall sites. Off by default: in the nested VM on Debian's 6.12 host
  // kernel (KVM_CAP_XEN_HVM 0x1ff) a vmmcall still got KVM's -KVM_ENOSYS with it configured
  // (XenkvmCli.HypercallInstructionsTakeTheHostsPath), so the rewrite, which works on every
  // kind, stays the path until that is understood.
  bool xen_intercept = false;
  ApStart ap_start = ApStart::kAuto;  // --ap-start
};

// --stats: one PV disk's counters.
struct DiskStats {
  std::string vdev;
  std::string path;
  blkif::DiskStatsSnapshot stats;
};

class Machine final : public xen::Platform, public VcpuHost {
 public:
  static Result<std::unique_ptr<Machine>> Create(const MachineConfig& config);
  ~Machine() override;

  // `kernel`: a PVH ELF or a Linux bzImage holding one; `initrd` (may be empty): module 0.
  Result<> LoadGuest(std::span<const uint8_t> kernel, std::span<const uint8_t> initrd = {});
  // Runs until the guest shuts down or fails. Does not time out by itself (the CLI's watchdog
  // does, with _exit, because a vCPU stuck in KVM_RUN can't be joined). end.threads_stuck says
  // some vCPU threads never left: the caller must then leave without destructors.
  MachineEnd Run();

  // Any thread: end the run (the first end wins) and make every vCPU leave KVM_RUN.
  void Stop(MachineEnd end) override;
  uint32_t LastStage() const { return last_stage_.load(std::memory_order_relaxed); }
  // Any thread: ask the guest to shut down as a toolstack does (`xl shutdown`): writes
  // /local/domain/<id>/control/shutdown = reason ("poweroff", "reboot", ...). Fails when the
  // guest never talked to xenstore (it can't be watching).
  Result<> RequestShutdown(std::string_view reason);
  // For --stats (any thread).
  const evtchn::Engine& engine() const { return *engine_; }
  const xen::Domain& domain() const { return *domain_; }
  std::vector<DiskStats> DiskStatistics() const;
  backends::ConsoleRing::Counters ConsoleCounters() { return console_ring_->counters(); }
  backends::XenstoreRing::Counters XenstoreCounters() { return xs_ring_->counters(); }
  // The VMM's own (dom0) xenstore client, for backends wired on top of the Machine.
  xenstore::Store& store() { return store_; }
  xenstore::ConnId store_dom0() const { return dom0_; }
  const MachineConfig& config() const { return config_; }
  // Where this host's KVM leaves rip at a port-I/O exit (the kind of KVM: PVM is past it).
  kvm::PioExitRip pio_exit_rip() const { return pio_exit_rip_; }
  // Fixed once LoadGuest (or Restore) returned, so any thread may read them after that.
  HypercallPath hypercall_path() const { return hypercall_path_; }
  size_t rewritten_hypercall_sites() const { return rewritten_hypercall_sites_; }
  ApStart ap_start() const { return ap_start_; }  // never kAuto once LoadGuest returned

  // ---- pause (docs/control.md): any thread but a vCPU's ----
  // Counted like Xen's domain pause: each Pause needs its Resume. The first one parks every
  // vCPU thread out of KVM_RUN (its last exit completed in KVM) and freezes the timers; it
  // fails, leaving nothing paused, if a vCPU does not park within kPauseTimeout or the run is
  // ending. Event sources (backends, routes) go on: what they raise waits in guest memory and
  // the LAPICs. Guest time goes on too (system time and the TSC), as in Xen.
  static constexpr auto kPauseTimeout = std::chrono::seconds(10);
  static constexpr uint32_t kMaxPauseCount = 255;  // as Xen's controller pause count
  Result<> Pause();
  Result<> Resume();  // XEN_EINVAL when not paused
  uint32_t PauseCount();
  // While paused: `work` on each vCPU's own thread (kvm::Vcpu calls belong there), in vCPU
  // order; stops at the first failure.
  Result<> ForEachParkedVcpu(const std::function<Result<>(uint32_t, kvm::Vcpu&)>& work);
  // Console input (the control socket's send-key): queued for the ring's input side; returns
  // how many bytes were taken (fewer when the guest is not reading its console).
  size_t ConsoleInput(std::span<const char> bytes) { return console_ring_->Input(bytes); }

  // ---- snapshots (docs/snapshots.md; vmm/machine_snapshot.cc) ----
  // Any thread but a vCPU's: pauses (counted), writes the whole guest to `path` (through a
  // temporary file renamed at the end), resumes.
  Result<> Save(const std::string& path);
  // Hot-unplug of the PV disk named `vdev` (--disk ...,vdev=): the backend asks the frontend to
  // close; the device's directories go once it has. Any thread. -ENOENT: no such disk.
  Result<> UnplugDisk(const std::string& vdev);
  // What a snapshot needs of the machine's shape, to build the MachineConfig for Restore.
  struct SnapshotShape {
    uint32_t vcpus = 0;
    uint64_t memory_mib = 0;
  };
  static Result<SnapshotShape> ReadSnapshotShape(const std::string& path);
  // Instead of LoadGuest, on a machine created with that shape: the guest as saved. Run()
  // then resumes it where it was. A refused file leaves a machine that must not be run.
  Result<> Restore(const std::string& path);

  // ---- live migration (docs/migration.md; vmm/migration.cc) ----
  struct MigrationReport {
    bool ok = false;
    std::string error;       // why it failed (one line), when !ok
    bool paused = false;     // failed after committing: the guest is left paused here
    double downtime_ms = 0;  // pause -> the destination says the guest runs
    double total_ms = 0;
    uint32_t rounds = 0;       // pre-copy rounds (the first sends all RAM that is not zero)
    uint64_t pages_sent = 0;   // in the pre-copy rounds
    uint64_t final_pages = 0;  // sent while paused
    uint64_t bytes = 0;        // on the wire, this way
  };
  // Any thread but a vCPU's; one migration at a time. Sends the guest over `channel` while it
  // runs, then pauses it for the rest. On success the guest runs at the destination and the
  // caller ends this machine (it stays paused); on failure it runs on here, unless `paused`.
  MigrationReport MigrateOut(snapshot::Channel& channel);
  // The destination, in order: the machine's shape from the stream's HELO (host checked); then,
  // on a machine created with that shape instead of LoadGuest, the RAM rounds and the final
  // state, loaded and checked (a refusal goes back to the source as FAIL), REDY, and the
  // source's GO. Run() then resumes it; `on_resumed` (called once from Run) says whether it did.
  static Result<SnapshotShape> ReceiveShape(snapshot::Channel& channel);
  Result<> ReceiveMigration(snapshot::Channel& channel);
  void NotifyWhenResumed(std::function<void(const Result<>&)> on_resumed) {
    on_resumed_ = std::move(on_resumed);
  }

  // ---- xen::Platform ----
  uint32_t VcpuCount() const override { return config_.vcpus; }
  Result<uint64_t> TranslateGva(uint32_t calling_vcpu, uint64_t gva, xen::Access access) override;
  std::span<const xen::MemoryMapEntry> MemoryMap() const override { return memory_map_; }
  uint64_t RamPages() const override { return ram_size_ >> 12; }
  void ReleaseRam(uint64_t gpa, uint64_t size) override;
  Result<> MapSpecialPage(uint64_t gfn) override;
  void UnmapSpecialPage(uint64_t gfn) override;
  void ConsoleWrite(std::span<const char> bytes) override;  // console_io
  size_t ConsoleRead(std::span<char> out) override;
  void Shutdown(uint32_t reason) override;  // Stop(GuestShutdownEnd(reason))
  bool Stopping() const override { return stopping_.load(std::memory_order_acquire); }
  Result<> InitialiseVcpu(uint32_t target, const vcpu_hvm_context& context) override;
  Result<> UpVcpu(uint32_t target) override;
  Result<> DownVcpu(uint32_t target) override;
  bool VcpuIsUp(uint32_t target) const override;
  void SetUpcallVector(uint32_t target, uint8_t vector) override;
  void SetCallbackVector(uint8_t vector) override;
  void RaiseUpcall(uint32_t target) override;
  uint64_t SystemTimeNs() const override { return clock_.NowNs(); }
  void BootWallclock(uint64_t* sec, uint32_t* nsec) const override {
    clock_.BootWallclock(sec, nsec);
  }
  void SetTimer(uint32_t target, uint64_t deadline_ns, uint64_t period_ns) override;
  Result<vcpu_time_info> VcpuTime(uint32_t target) override;
  uint64_t WakeSeq(uint32_t calling_vcpu) override;
  void Sleep(uint32_t calling_vcpu, uint64_t seq, uint64_t deadline_ns) override;
  void Yield(uint32_t calling_vcpu) override;

 private:
  // ---- VcpuHost (Stopping, Stop and SystemTimeNs above) ----
  long Hypercall(const xen::HypercallCall& call) override { return domain_->Hypercall(call); }
  Result<> WriteHypercallPage(uint64_t msr_value, bool compat) override;
  int HypercallSlot(uint64_t gpa) const override { return hypercall_pages_.Slot(gpa); }
  Result<> ReadGuest(uint64_t gpa, std::span<std::byte> out) const override {
    return memory_.Read(gpa, out);
  }
  void NoteRunstate(uint32_t vcpu, int runstate) override { domain_->NoteRunstate(vcpu, runstate); }
  void SyncEvents(uint32_t vcpu) override { engine_->SyncVcpu(vcpu); }
  void NoteStage(uint32_t vcpu, uint32_t stage) override;
  void DebugconWrite(uint8_t byte) override;
  bool Mmio(uint64_t gpa, std::span<uint8_t> data, bool is_write) override;
  Result<std::vector<kvm_cpuid_entry2>> Cpuid(uint32_t vcpu) override;
  BootEntry Boot() const override { return boot_; }
  void CalibrateClock(uint32_t vcpu, uint64_t guest_tsc, uint32_t tsc_khz) override {
    clock_.Calibrate(vcpu, guest_tsc, tsc_khz);
    // The vCPU has time from its first instruction (a vCPU started after shared_info was
    // mapped had none until a later exit: its guest's timed waits fell back to spin counts).
    domain_->RefreshVcpuTime(vcpu);
  }
  uint64_t ClockMonotonicNs() const override { return clock_.MonotonicNs(); }
  void SampleClock(uint32_t vcpu, uint64_t guest_tsc, uint64_t mono_ns) override;
  void VcpuThreadFinished(uint32_t vcpu) override;

  explicit Machine(const MachineConfig& config);
  Result<> Setup();
  // The special pages (xenstore and console rings at libxc's gfns), the store and its tree.
  Result<> SetupRings();
  // LoadGuest without the host's intercept: Linux's hypercall sites in `code` to port I/O.
  Result<> RewriteHypercallSites(std::span<const PvhBoot::Range> code);
  void KickAll();
  // Run() of a restored guest: the vCPU threads start parked; their saved state is loaded on
  // them, then they go.
  Result<> ResumeRestored();
  std::function<void(const Result<>&)> on_resumed_;  // NotifyWhenResumed
  // Snapshot pieces shared by Save and MigrateOut (vmm/machine_snapshot.cc). While paused: each
  // vCPU's state, read on its thread; the whole guest as snapshot sections, RAM either every
  // page that is not zero (ram_pages == nullptr) or exactly the pages in ram_pages.
  Result<std::vector<std::vector<std::byte>>> SaveVcpus();
  Result<> WriteState(snapshot::Writer& writer, const std::vector<std::vector<std::byte>>& vcpus,
                      const mem::DirtyBitmap* ram_pages);
  Result<> RestoreFrom(const snapshot::Reader& reader);
  // PV disks with every request in flight answered (answers and notifications already in RAM
  // and the vCPUs' state) and none taken, for as long as this lives: what Save and a
  // migration's stop-and-copy read. Taken while paused.
  class DisksQuiesced {
   public:
    explicit DisksQuiesced(Machine& machine);
    ~DisksQuiesced();
    DisksQuiesced(const DisksQuiesced&) = delete;
    DisksQuiesced& operator=(const DisksQuiesced&) = delete;

   private:
    Machine& machine_;
  };
  std::atomic<bool> migrating_{false};  // MigrateOut: one at a time
  struct Restored {  // what only the vCPU threads can load, and what waits for them
    std::vector<kvm::VcpuSnapshot> vcpus;
    std::vector<uint8_t> lifecycle;                     // VcpuState per vCPU
    std::vector<std::pair<uint64_t, uint64_t>> timers;  // (deadline, period) per vCPU
    uint32_t tsc_khz = 0;
  };
  std::unique_ptr<Restored> restored_;
  // Run has started the vCPU threads and loaded a restored state into them: before that a
  // vCPU's KVM state is not the guest's yet (Save waits for it).
  std::atomic<bool> running_{false};
  // Console input thread: config_.console.input_fd into the ring until EOF or the end.
  void InputLoop();

  const MachineConfig config_;
  static constexpr uint32_t kRamSlot = 0;   // guest RAM from GPA 0, in KVM and GuestMemory
  static constexpr uint32_t kAcpiSlot = 1;  // the ACPI tables (SetupAcpi); special pages follow
  Result<> SetupAcpi();
  void* acpi_ = nullptr;  // the ACPI region's host pages (acpi_size_ bytes)
  uint64_t acpi_size_ = 0;
  uint64_t rsdp_gpa_ = 0;
  uint64_t ram_size_ = 0;
  void* ram_ = nullptr;
  std::vector<xen::MemoryMapEntry> memory_map_;
  GuestClock clock_;
  std::optional<kvm::System> system_;
  std::optional<kvm::Vm> vm_;
  kvm::PioExitRip pio_exit_rip_ = kvm::PioExitRip::kAtInstruction;
  mem::GuestMemory memory_;
  std::unique_ptr<evtchn::Engine> engine_;
  std::unique_ptr<xen::Domain> domain_;
  std::unique_ptr<EchoBackend> echo_;
  // Xenstore and the PV console (docs/xenstore.md): after engine_ and memory_, which they use.
  xenstore::Store store_;
  xenstore::ConnId dom0_ = 0;
  std::unique_ptr<backends::XenstoreRing> xs_ring_;
  std::unique_ptr<backends::ConsoleRing> console_ring_;
  std::thread input_thread_;
  xen::HypercallPageSet hypercall_pages_;  // for HypercallSlot
  // Xen pages the guest placed outside RAM: gfn -> (memslot, host page). Slot 0 is RAM.
  struct SpecialPage {
    uint32_t slot;
    void* host;
  };
  Mutex special_mutex_;  // guards special_pages_; taken after xen::Domain's lock
  std::map<uint64_t, SpecialPage> special_pages_ XENKVM_GUARDED_BY(special_mutex_);
  std::unique_ptr<Timers> timers_;
  std::unique_ptr<UpcallInjector> injector_;
  std::vector<std::unique_ptr<VcpuRunner>> runners_;
  std::vector<std::unique_ptr<backends::Vbd>> disks_;  // after engine_/domain_: they use them
  // --test-device: its eventfd routes (raising through domain_'s PIRQs) and the device.
  std::unique_ptr<evtchn::EventfdRouter> router_;
  std::unique_ptr<MsiTestDevice> test_device_;
  BootEntry boot_;
  HypercallPath hypercall_path_ = HypercallPath::kPagePort;  // see hypercall_path()
  ApStart ap_start_ = ApStart::kXenVcpuOp;                   // see ap_start()
  size_t rewritten_hypercall_sites_ = 0;

  // Pause state (Pause/Resume): taken before the runners' and the timers' locks.
  Mutex pause_mutex_;
  uint32_t pause_count_ XENKVM_GUARDED_BY(pause_mutex_) = 0;

  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> last_stage_{0};
  Mutex end_mutex_;
  std::condition_variable end_cv_;
  std::optional<MachineEnd> end_ XENKVM_GUARDED_BY(end_mutex_);  // first end wins
  uint32_t finished_threads_ XENKVM_GUARDED_BY(end_mutex_) = 0;
  bool stuck_ = false;  // main thread only: some vCPU threads never finished

  // Guest text: Xen's console (console_io, debugcon) and the ring each to their own fd,
  // unbuffered (a watchdog _exit must not lose it), each with its own filter state.
  struct OutputStream {
    int fd = -1;
    TerminalFilter filter;
  };
  void WriteGuestText(OutputStream& stream, std::span<const char> bytes);
  Mutex console_mutex_;
  std::string debugcon_line_ XENKVM_GUARDED_BY(console_mutex_);
  OutputStream xen_out_ XENKVM_GUARDED_BY(console_mutex_);
  OutputStream ring_out_ XENKVM_GUARDED_BY(console_mutex_);
};

}  // namespace xenkvm::vmm
