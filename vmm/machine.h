// The xenkvm virtual machine: guest RAM, the KVM VM and one thread per vCPU, the event-channel
// engine and Xen domain, timers, console and the echo backend. Implements xen::Platform, the
// mechanism under the hypercall layer. Boots a 64-bit PVH guest and runs it to shutdown.
//
// Threads: Create/Run on the main thread; Platform methods from vCPU threads (see
// xen/platform.h); Shutdown/Fail from any thread. Lock: end_mutex_ guards the end state;
// console_mutex_ serialises stdout; per-vCPU state lives in VcpuRunner.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "evtchn/engine.h"
#include "kvm/system.h"
#include "kvm/vm.h"
#include "mem/guest_memory.h"
#include "vmm/console_backend.h"
#include "vmm/echo_backend.h"
#include "vmm/guest_clock.h"
#include "vmm/terminal_filter.h"
#include "vmm/timers.h"
#include "xen/domain.h"
#include "xen/platform.h"

namespace xenkvm::vmm {

class VcpuRunner;

// What one guest may make the VMM spend (like xenstored's quotas); the CLI exposes each.
// Xenstore quotas (entries, size, watches, transactions) join here with the xenstore server.
struct ResourceLimits {
  uint32_t log_per_second = 5;               // guest-triggered log lines (after a burst)
  uint32_t log_burst = 20;
  uint32_t console_io_max_bytes = 64 * 1024;  // shown per CONSOLEIO_write call
  uint32_t backend_queue_max = 1024;          // outstanding requests per VMM backend
};

struct MachineConfig {
  uint32_t vcpus = 1;
  uint64_t memory_mib = 128;
  std::string cmdline;
  bool log_stages = true;   // print each stage marker (port 0xe4) on stderr
  bool console_raw = false;  // pass guest text to stdout unfiltered (terminal escapes included)
  ResourceLimits limits;
};

// How a run ended.
enum class EndReason {
  kPoweroff,       // SCHEDOP_shutdown poweroff
  kReboot,         // SCHEDOP_shutdown reboot
  kCrash,          // SCHEDOP_shutdown crash (or another reason)
  kSuspend,        // SCHEDOP_shutdown suspend (a save would follow in Xen's toolstack)
  kSignal,         // the user asked the VMM to stop (SIGINT/SIGTERM)
  kTripleFault,    // KVM_EXIT_SHUTDOWN
  kInternalError,  // KVM_EXIT_INTERNAL_ERROR / FAIL_ENTRY / unexpected exit
  kHostError,      // an ioctl failed
  kStuck,          // vCPU threads did not stop after shutdown
};

struct MachineEnd {
  EndReason reason = EndReason::kCrash;
  uint32_t xen_reason = 0;  // SHUTDOWN_* when reason is a guest shutdown
  std::string message;      // one line for the user
};

class Machine final : public xen::Platform {
 public:
  static Result<std::unique_ptr<Machine>> Create(const MachineConfig& config);
  ~Machine() override;

  Result<> LoadGuest(std::span<const uint8_t> elf_image);
  // Runs until the guest shuts down or fails. Does not time out by itself (the CLI's watchdog
  // does, with _exit, because a vCPU stuck in KVM_RUN can't be joined).
  MachineEnd Run();

  // Any thread.
  void Stop(EndReason reason, std::string message);
  uint32_t LastStage() const { return last_stage_.load(std::memory_order_relaxed); }
  void NoteStage(uint32_t vcpu, uint32_t stage);
  // Called by each vCPU thread as it exits (Run waits for all of them).
  void VcpuThreadFinished();
  evtchn::Engine& engine() { return *engine_; }
  xen::Domain& domain() { return *domain_; }
  mem::GuestMemory& memory() { return memory_; }
  kvm::Vm& vm() { return *vm_; }
  const MachineConfig& config() const { return config_; }
  const GuestClock& clock() const { return clock_; }
  GuestClock& mutable_clock() { return clock_; }
  uint32_t boot_entry() const { return boot_entry_; }
  uint64_t boot_start_info() const { return boot_start_info_; }
  uint8_t callback_vector() const { return callback_vector_.load(std::memory_order_acquire); }
  void DebugconWrite(uint8_t byte);
  // Where all guest text ends up: stdout, unbuffered (a watchdog _exit must not lose it).
  void WriteStdout(std::span<const char> bytes);
  // A per-vCPU-vector MSI found its LAPIC disabled: retry it every millisecond until the guest
  // enables the LAPIC (x2APIC MSRs can't be trapped, so there is no exit to hook).
  void NoteDroppedMsi();

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
  void Shutdown(uint32_t reason) override;
  bool Stopping() const override { return stopping_.load(std::memory_order_acquire); }
  Result<> InitialiseVcpu(uint32_t target, const vcpu_hvm_context& context) override;
  Result<> UpVcpu(uint32_t target) override;
  Result<> DownVcpu(uint32_t target) override;
  bool VcpuIsUp(uint32_t target) const override;
  void SetUpcallVector(uint32_t target, uint8_t vector) override;
  void SetCallbackVector(uint8_t vector) override;
  void RaiseUpcall(uint32_t target) override;
  uint64_t SystemTimeNs() const override { return clock_.NowNs(); }
  void BootWallclock(uint64_t* sec, uint32_t* nsec) const override { clock_.BootWallclock(sec, nsec); }
  void SetTimer(uint32_t target, uint64_t deadline_ns, uint64_t period_ns) override;
  Result<vcpu_time_info> VcpuTime(uint32_t target) override;
  uint64_t WakeSeq(uint32_t calling_vcpu) override;
  void Sleep(uint32_t calling_vcpu, uint64_t seq, uint64_t deadline_ns) override;
  void Yield(uint32_t calling_vcpu) override;

 private:
  explicit Machine(const MachineConfig& config);
  Result<> Setup();

  const MachineConfig config_;
  uint64_t ram_size_ = 0;
  void* ram_ = nullptr;
  std::vector<xen::MemoryMapEntry> memory_map_;
  GuestClock clock_;
  std::optional<kvm::System> system_;
  std::optional<kvm::Vm> vm_;
  mem::GuestMemory memory_;
  std::unique_ptr<evtchn::Engine> engine_;
  std::unique_ptr<xen::Domain> domain_;
  std::unique_ptr<EchoBackend> echo_;
  std::unique_ptr<ConsoleBackend> console_;
  uint64_t console_ring_gpa_ = 0;
  // Xen pages the guest placed outside RAM: gfn -> (memslot, host page). Slot 0 is RAM.
  struct SpecialPage {
    uint32_t slot;
    void* host;
  };
  Mutex special_mutex_;  // guards special_pages_; taken after xen::Domain's lock
  std::map<uint64_t, SpecialPage> special_pages_ XENKVM_GUARDED_BY(special_mutex_);
  std::atomic<bool> console_io_used_{false};
  std::unique_ptr<Timers> timers_;
  std::vector<std::unique_ptr<VcpuRunner>> runners_;
  uint32_t boot_entry_ = 0;
  uint64_t boot_start_info_ = 0;

  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> last_stage_{0};
  std::atomic<uint8_t> callback_vector_{0};
  std::mutex end_mutex_;
  std::condition_variable end_cv_;
  std::optional<MachineEnd> end_;  // guarded by end_mutex_; first end wins
  uint32_t finished_threads_ = 0;  // guarded by end_mutex_
  bool stuck_ = false;             // main thread only: some vCPU threads never finished

  void MsiRetryLoop();
  std::mutex retry_mutex_;
  std::condition_variable retry_cv_;
  bool retry_wanted_ = false;  // guarded by retry_mutex_
  bool retry_stop_ = false;    // guarded by retry_mutex_
  std::thread retry_thread_;

  void WriteGuestTextLocked(std::span<const char> bytes);  // console_mutex_ held
  std::mutex console_mutex_;
  std::string debugcon_line_;        // guarded by console_mutex_
  TerminalFilter terminal_filter_;   // guarded by console_mutex_
};

}  // namespace xenkvm::vmm
