// The VM: setup, run, end, and the xen::Platform mechanism; see machine.h.
#include "vmm/machine.h"

#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "abi/platform.h"
#include "boot/acpi_tables.h"
#include "boot/hypercall_sites.h"
#include "mem/layout_guard.h"
#include "vmm/pvh_loader.h"
#include "vmm/upcall_injector.h"
#include "vmm/vcpu_runner.h"
#include "vmm/x86_state.h"
#include "xen/hypercall_page.h"
#include "xenstore/domain_tree.h"

namespace xenkvm::vmm {

namespace {
constexpr uint64_t kMaxMemoryMib = 3072;  // RAM stays below the LAPIC page at 0xfee00000
constexpr uint32_t kMaxVcpus = 64;
// Console input: bytes read from the input fd at once; how long to wait for the guest to make
// room in its ring (it notifies when it consumed; polling keeps this simple and bounded).
constexpr size_t kInputChunk = 4096;
constexpr int kInputPollMs = 20;

void WriteAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
}
}  // namespace

Machine::Machine(const MachineConfig& config) : config_(config), clock_(config.vcpus) {
  MutexLock lock(console_mutex_);
  xen_out_.fd = config_.console.xen_fd;
  ring_out_.fd = config_.console.ring_fd;
}

// Teardown order matters: event sources (timers, backends, the injector's retry thread, the
// engine's worker) call into the runners, and the runners' threads call into the engine. So:
// stop and join the vCPU threads, then the sources, then the engine, and free the runners last.
Machine::~Machine() {
  stopping_ = true;
  KickAll();
  if (stuck_) {
    for (auto& r : runners_) (void)r.release();  // threads still inside KVM_RUN: never join
    runners_.clear();
  }
  for (auto& r : runners_) r->Join();
  if (input_thread_.joinable()) input_thread_.join();  // polls stopping_
  if (injector_) injector_->StopRetries();
  timers_.reset();
  disks_.clear();        // their I/O threads map grants (domain_) and raise ports (engine_)
  test_device_.reset();  // its thread signals through router_, which raises through domain_
  router_.reset();
  echo_.reset();
  domain_.reset();
  engine_.reset();
  xs_ring_.reset();
  console_ring_.reset();
  runners_.clear();
  injector_.reset();
  if (ram_ != nullptr && !stuck_) ::munmap(ram_, ram_size_);
  if (acpi_ != nullptr && !stuck_) ::munmap(acpi_, acpi_size_);
  if (!stuck_) {
    MutexLock lock(special_mutex_);
    for (const auto& [gfn, page] : special_pages_) ::munmap(page.host, abi::kPageSize);
  }
}

Result<std::unique_ptr<Machine>> Machine::Create(const MachineConfig& config) {
  if (config.vcpus == 0 || config.vcpus > kMaxVcpus) return UsageFail("--vcpus must be 1..64");
  if (config.memory_mib < 2 || config.memory_mib > kMaxMemoryMib)
    return UsageFail("--memory must be 2..3072 MiB");
  std::unique_ptr<Machine> m(new Machine(config));
  TRY(m->Setup());
  return m;
}

std::vector<DiskStats> Machine::DiskStatistics() const {
  std::vector<DiskStats> out;
  for (const auto& disk : disks_)
    out.push_back({disk->config().vdev, disk->config().disk.path, disk->Stats()});
  return out;
}

Result<> Machine::Setup() {
  kvm::InstallKickHandler();
  system_.emplace(TRY(kvm::System::Open()));
  vm_.emplace(TRY(kvm::Vm::Create(*system_)));
  TRY(vm_->EnableX2apicApi());
  TRY(vm_->EnableSplitIrqchip());
  TRY(vm_->EnableUserSpaceMsrExits());
  TRY(vm_->TrapMsrs(XENKVM_HYPERCALL_PAGE_MSR, 1));
  // With the host's Xen intercept every vmcall/vmmcall reaches us as KVM_EXIT_XEN, so nothing
  // in the image needs rewriting (LoadGuest); the hypercall page works either way.
  if (config_.xen_intercept && (system_->XenHvmFlags() & KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL) != 0) {
    TRY(vm_->InterceptXenHypercalls());
    hypercall_path_ = HypercallPath::kIntercept;
  }
  if (!system_->CheckExtension(KVM_CAP_SYNC_REGS))
    return HostFail(ENOSYS, "KVM_CHECK_EXTENSION(KVM_CAP_SYNC_REGS)");
  pio_exit_rip_ = TRY(kvm::ProbePioExitRip(*system_));

  ram_size_ = config_.memory_mib << 20;
  ram_ = ::mmap(nullptr, ram_size_, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram_ == MAP_FAILED) {
    ram_ = nullptr;
    return HostFail(errno, "mmap guest RAM");
  }
  TRY(vm_->SetMemory(kRamSlot, 0, ram_size_, ram_));
  TRY(memory_.AddSlot(kRamSlot, 0, ram_size_, ram_));
  // The console and xenstore rings are special pages outside RAM (SetupRings), as libxc puts
  // them: in no memory map entry.
  memory_map_ = {{0, ram_size_, XEN_HVM_MEMMAP_TYPE_RAM},
                 {0xfee00000, 0x1000, XEN_HVM_MEMMAP_TYPE_RESERVED}};
  if (config_.test_device)
    memory_map_.insert(memory_map_.begin() + 1,
                       {XENKVM_TEST_DEVICE_GPA, 0x1000, XEN_HVM_MEMMAP_TYPE_RESERVED});
  TRY(SetupAcpi());

  engine_ = std::make_unique<evtchn::Engine>(memory_, evtchn::Engine::Options{});
  domain_ = std::make_unique<xen::Domain>(
      *this, memory_, *engine_,
      xen::Domain::Options{.log_per_second = config_.limits.log_per_second,
                           .log_burst = config_.limits.log_burst,
                           .console_io_max_bytes = config_.limits.console_io_max_bytes});
  injector_ = std::make_unique<UpcallInjector>(*vm_, *engine_, config_.vcpus);
  for (uint32_t i = 0; i < config_.vcpus; ++i) {
    runners_.push_back(
        std::make_unique<VcpuRunner>(*this, *injector_, TRY(vm_->CreateVcpu(i)), pio_exit_rip_));
    injector_->Attach(i, runners_.back().get());
    TRY(engine_->AddVcpu(i, runners_.back().get()));
  }
  // The echo service is the first endpoint of domain 0 (abi/platform.h); guests rely on that.
  echo_ = std::make_unique<EchoBackend>(*engine_, config_.limits.backend_queue_max);
  if (TRY(engine_->AddBackendEndpoint(echo_.get())) != XENKVM_ECHO_ENDPOINT) {
    return Fail(XEN_EINVAL, "echo backend did not get endpoint XENKVM_ECHO_ENDPOINT");
  }
  TRY(SetupRings());
  timers_ = std::make_unique<Timers>(
      config_.vcpus, [this] { return clock_.NowNs(); },
      [this](uint32_t vcpu) { engine_->RaiseVirq(VIRQ_TIMER, vcpu); });
  if (config_.test_device) {
    router_ = std::make_unique<evtchn::EventfdRouter>(*engine_, &domain_->pirqs());
    test_device_ = TRY(MsiTestDevice::Create(*vm_, *router_));
  }
  // PV disks: each announced in xenstore as libxl does, connected when its frontend asks.
  for (backends::VbdConfig disk : config_.disks) {
    disk.domid = domain_->domid();
    disks_.push_back(TRY(backends::Vbd::Create(store_, *engine_, domain_->grants(), disk)));
  }
  return {};
}

// As libxl does for every PVH guest: RSDP, XSDT, FADT, MADT and DSDT for config_.vcpus in a
// memslot of their own at boot::kAcpiTablesGpa (above RAM, below the test device and LAPIC),
// typed ACPI in the memory map so the guest never takes it for RAM. Built here, not at load, so
// a restored machine has the same tables at the same place.
Result<> Machine::SetupAcpi() {
  const boot::AcpiTables tables = TRY(boot::BuildAcpiTables(config_.vcpus));
  acpi_size_ = tables.bytes.size();
  acpi_ = ::mmap(nullptr, acpi_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (acpi_ == MAP_FAILED) {
    acpi_ = nullptr;
    return HostFail(errno, "mmap ACPI tables");
  }
  std::memcpy(acpi_, tables.bytes.data(), acpi_size_);
  TRY(vm_->SetMemory(kAcpiSlot, tables.base_gpa, acpi_size_, acpi_));
  TRY(memory_.AddSlot(kAcpiSlot, tables.base_gpa, acpi_size_, acpi_));
  const xen::MemoryMapEntry entry{tables.base_gpa, acpi_size_, XEN_HVM_MEMMAP_TYPE_ACPI};
  auto at = memory_map_.begin();
  while (at != memory_map_.end() && at->addr < entry.addr) ++at;
  memory_map_.insert(at, entry);
  rsdp_gpa_ = tables.rsdp_gpa;
  return {};
}

// As a toolstack sets up a domain (libxl + libxc): the rings at libxc's special pfns with
// their ports connected to dom0 (the VMM), then the xenstore tree naming them. Both rings are
// served before the guest runs; console input starts with the run.
Result<> Machine::SetupRings() {
  const uint64_t console_gpa = xen::Domain::kConsoleRingGfn << 12;
  const uint64_t store_gpa = xen::Domain::kStoreRingGfn << 12;
  console_ring_ = std::make_unique<backends::ConsoleRing>(memory_, console_gpa,
                                                          [this](std::span<const char> text) {
                                                            MutexLock lock(console_mutex_);
                                                            WriteGuestText(ring_out_, text);
                                                          });
  const evtchn::Port console_port = TRY(domain_->SetupRing(
      xen::SpecialRing::kConsole, xen::Domain::kConsoleRingGfn, console_ring_.get()));
  console_ring_->SetNotify([this, console_port] { engine_->RaisePort(console_port); });

  const xenstore::DomId domid = domain_->domid();
  xs_ring_ = std::make_unique<backends::XenstoreRing>(memory_, store_gpa, store_, domid);
  const evtchn::Port store_port =
      TRY(domain_->SetupRing(xen::SpecialRing::kStore, xen::Domain::kStoreRingGfn, xs_ring_.get()));
  xs_ring_->ResetPage();  // SetupRing zeroed the page the ring had initialised
  xs_ring_->SetNotify([this, store_port] { engine_->RaisePort(store_port); });

  dom0_ = store_.Connect(xenstore::kPrivilegedDomid);
  const uint64_t ram_kib = ram_size_ >> 10;
  TRY(xenstore::WriteDomainTree(
      store_, dom0_,
      {.domid = domid,
       .name = config_.name,
       .max_memory_kib = ram_kib,
       .target_kib = ram_kib,
       .vcpus = config_.vcpus,
       .console = xenstore::RingInfo{xen::Domain::kConsoleRingGfn, console_port},
       .store = xenstore::RingInfo{xen::Domain::kStoreRingGfn, store_port}}));
  return {};
}

Result<> Machine::RequestShutdown(std::string_view reason) {
  if (xs_ring_->counters().requests_bytes == 0)
    return Fail(XEN_ENOENT, "the guest has no xenstore connection");
  const std::string path =
      "/local/domain/" + std::to_string(domain_->domid()) + "/control/shutdown";
  return store_.Write(dom0_, 0, path, reason);
}

Result<> Machine::UnplugDisk(const std::string& vdev) {
  for (const auto& disk : disks_)
    if (disk->config().vdev == vdev) return disk->xenbus().RequestUnplug();
  return Fail(XEN_ENOENT, "no PV disk by that name");
}

Result<> Machine::Pause() {
  MutexLock lock(pause_mutex_);
  if (Stopping()) return Fail(XEN_ESRCH, "the guest is ending");
  if (pause_count_ >= kMaxPauseCount) return Fail(XEN_EOVERFLOW, "paused too many times");
  if (pause_count_ > 0) {
    ++pause_count_;
    return {};
  }
  // Timers first: an expiry in flight is delivered before the vCPUs park, none after.
  timers_->Pause();
  for (auto& r : runners_) r->RequestPause();
  const auto deadline = std::chrono::steady_clock::now() + kPauseTimeout;
  bool parked = true;
  for (auto& r : runners_) {
    if (!r->WaitParked(deadline)) {
      parked = false;
      break;
    }
  }
  // A vCPU that asked for the end (SCHEDOP_shutdown) just before the request still parks: a
  // pause then would be of a guest that is gone, so it fails as one that came too late.
  if (!parked || Stopping()) {
    for (auto& undo : runners_) undo->ResumeParked();
    timers_->Resume();
    return Stopping() ? Fail(XEN_ESRCH, "the guest is ending")
                      : Fail(XEN_ETIMEDOUT, "a vCPU did not stop");
  }
  pause_count_ = 1;
  return {};
}

Result<> Machine::Resume() {
  MutexLock lock(pause_mutex_);
  if (pause_count_ == 0) return Fail(XEN_EINVAL, "not paused");
  if (--pause_count_ > 0) return {};
  for (auto& r : runners_) r->ResumeParked();
  timers_->Resume();
  return {};
}

uint32_t Machine::PauseCount() {
  MutexLock lock(pause_mutex_);
  return pause_count_;
}

Result<> Machine::ForEachParkedVcpu(const std::function<Result<>(uint32_t, kvm::Vcpu&)>& work) {
  MutexLock lock(pause_mutex_);
  if (pause_count_ == 0) return Fail(XEN_EINVAL, "not paused");
  for (auto& r : runners_) {
    const uint32_t id = r->id();
    TRY(r->RunParked([&work, id](kvm::Vcpu& vcpu) { return work(id, vcpu); }));
  }
  return {};
}

// stdin (or the configured fd) into the ring. poll() with a timeout so the end is noticed;
// input the ring can't take yet waits here (never dropped) while the guest drains it.
void Machine::InputLoop() {
  const int fd = config_.console.input_fd;
  std::vector<char> buf(kInputChunk);
  while (!Stopping()) {
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) return;
    if (ready <= 0) continue;
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return;  // EOF (or an error): the guest simply gets no more input
    std::span<const char> rest(buf.data(), static_cast<size_t>(n));
    while (!rest.empty() && !Stopping()) {
      rest = rest.subspan(console_ring_->Input(rest));
      if (!rest.empty()) {
        ::poll(nullptr, 0, kInputPollMs);
        console_ring_->Service();
      }
    }
  }
}

Result<> Machine::LoadGuest(std::span<const uint8_t> kernel, std::span<const uint8_t> initrd) {
  PvhBoot boot = TRY(
      LoadPvhImage(kernel, memory_, ram_size_, config_.cmdline, memory_map_, initrd, rsdp_gpa_));
  if (boot.bzimage)
    std::fprintf(stderr, "xenkvm: bzImage: %s payload, %" PRIu64 " KiB ELF\n",
                 boot::CompressionName(boot.compression), boot.elf_size >> 10);
  if (boot.initrd_size != 0)
    std::fprintf(stderr, "xenkvm: initrd: %" PRIu64 " KiB at %#" PRIx64 "\n",
                 boot.initrd_size >> 10, boot.initrd_gpa);
  boot_ = BootEntry{boot.entry, boot.start_info_gpa};
  if (hypercall_path_ != HypercallPath::kIntercept) TRY(RewriteHypercallSites(boot.code));
  // Linux starts its APs as on bare metal (INIT-SIPI-SIPI, smp_hvm.c keeps native cpu_up);
  // guests written for the Xen vCPU ops start them with VCPUOP_initialise. One choice for all.
  ap_start_ = config_.ap_start;
  if (ap_start_ == ApStart::kAuto)
    ap_start_ = boot.guest_os == "linux" ? ApStart::kInitSipi : ApStart::kXenVcpuOp;
  if (ap_start_ == ApStart::kInitSipi)
    for (uint32_t i = 1; i < runners_.size(); ++i) TRY(runners_[i]->StartWaitingForSipi());
  return {};
}

// Without the host's intercept a Linux (6.1.121+, 6.6.67+, 6.12.6+) vmcall/vmmcall would get
// -KVM_ENOSYS: its two sites become the port trap (boot/hypercall_sites.h), in the loaded
// executable segments only. A kernel loaded by the guest itself (pvgrub) is out of reach.
Result<> Machine::RewriteHypercallSites(std::span<const PvhBoot::Range> code) {
  size_t sites = 0;
  for (const PvhBoot::Range& range : code) {
    mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
    uint8_t* host = TRY(memory_.TranslateGuarded(range.gpa, range.size));
    const size_t n = boot::RewriteXenHypercallSites({host, range.size}, range.gpa);
    if (n != 0) memory_.NoteHostWrite(range.gpa, range.size);
    sites += n;
  }
  rewritten_hypercall_sites_ = sites;
  if (sites != 0) {
    hypercall_path_ = HypercallPath::kRewritten;
    std::fprintf(stderr, "xenkvm: %zu Xen hypercall sites rewritten to port I/O\n", sites);
  }
  return {};
}

const char* HypercallPathName(HypercallPath path) {
  switch (path) {
    case HypercallPath::kRewritten:
      return "rewritten";
    case HypercallPath::kIntercept:
      return "intercept";
    case HypercallPath::kPagePort:
      break;
  }
  return "page+port";
}

MachineEnd Machine::Run() {
  if (restored_)
    for (auto& r : runners_) r->RequestPause();  // they start parked: see ResumeRestored
  for (auto& r : runners_) r->StartThread();
  if (restored_) {
    auto r = ResumeRestored();
    if (!r) Stop(MachineEnd{EndReason::kHostError, 0, "restore: " + Describe(r.error())});
    if (on_resumed_) on_resumed_(r);
  }
  running_.store(true, std::memory_order_release);
  if (config_.console.input_fd >= 0) input_thread_ = std::thread([this] { InputLoop(); });
  MutexLock lock(end_mutex_);
  while (!end_) end_cv_.wait(lock.native());
  MachineEnd end = *end_;
  // vCPU threads leave KVM_RUN on the kick; one stuck in a hung instruction can't be joined.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (finished_threads_ < runners_.size()) {
    lock.native().unlock();
    KickAll();
    lock.native().lock();
    end_cv_.wait_until(lock.native(), give_up);
    if (finished_threads_ < runners_.size() && std::chrono::steady_clock::now() >= give_up) {
      if (end.reason == EndReason::kPoweroff || end.reason == EndReason::kMigrated)
        end.reason = EndReason::kStuck;
      end.message += " (some vCPU threads did not stop)";
      end.threads_stuck = true;
      // Leave them: the caller exits without joining; the destructor won't wait.
      stuck_ = true;
      return end;
    }
  }
  if (test_device_) std::fputs(test_device_->Summary().c_str(), stderr);
  return end;
}

bool Machine::Mmio(uint64_t gpa, std::span<uint8_t> data, bool is_write) {
  if (!test_device_ || !MsiTestDevice::Contains(gpa)) return false;
  test_device_->Access(gpa, data, is_write);
  return true;
}

MachineEnd GuestShutdownEnd(uint32_t xen_reason) {
  static const char* const kNames[] = {"poweroff", "reboot",   "suspend",
                                       "crash",    "watchdog", "soft_reset"};
  const char* name = xen_reason < std::size(kNames) ? kNames[xen_reason] : "unknown";
  const EndReason reason = xen_reason == SHUTDOWN_poweroff  ? EndReason::kPoweroff
                           : xen_reason == SHUTDOWN_reboot  ? EndReason::kReboot
                           : xen_reason == SHUTDOWN_suspend ? EndReason::kSuspend
                                                            : EndReason::kCrash;
  return MachineEnd{reason, xen_reason, std::string("guest shutdown: ") + name};
}

void Machine::Stop(MachineEnd end) {
  {
    MutexLock lock(end_mutex_);
    if (!end_) end_ = std::move(end);
  }
  stopping_ = true;
  end_cv_.notify_all();
  KickAll();
}

void Machine::Shutdown(uint32_t reason) { Stop(GuestShutdownEnd(reason)); }

void Machine::KickAll() {
  for (auto& r : runners_) {
    r->Wake();
    r->Kick();
  }
}

void Machine::VcpuThreadFinished(uint32_t vcpu) {
  (void)vcpu;
  {
    MutexLock lock(end_mutex_);
    ++finished_threads_;
  }
  end_cv_.notify_all();
}

void Machine::SampleClock(uint32_t vcpu, uint64_t guest_tsc, uint64_t mono_ns) {
  switch (clock_.Sample(vcpu, guest_tsc, mono_ns)) {
    case GuestClock::Moved::kNothing:
      return;
    case GuestClock::Moved::kThisVcpu:
      domain_->RefreshVcpuTime(vcpu);
      return;
    case GuestClock::Moved::kRate:  // every pair carries the rate
      for (uint32_t id = 0; id < runners_.size(); ++id) domain_->RefreshVcpuTime(id);
      return;
  }
}

Result<> Machine::WriteHypercallPage(uint64_t msr_value, bool compat) {
  domain_->LatchShinfoLayout(compat);
  TRY(xen::WriteHypercallPage(memory_, msr_value));
  hypercall_pages_.Add(msr_value & ~uint64_t{0xfff});
  return {};
}

Result<std::vector<kvm_cpuid_entry2>> Machine::Cpuid(uint32_t vcpu) {
  return BuildCpuid(TRY(vm_->system().SupportedCpuid()), vcpu, domain_->domid());
}

void Machine::NoteStage(uint32_t vcpu, uint32_t stage) {
  last_stage_.store(stage, std::memory_order_relaxed);
  if (config_.log_stages) std::fprintf(stderr, "xenkvm: vCPU %u stage %u\n", vcpu, stage);
}

void Machine::DebugconWrite(uint8_t byte) {
  MutexLock lock(console_mutex_);
  debugcon_line_.push_back(static_cast<char>(byte));
  if (byte == '\n' || debugcon_line_.size() >= 256) {
    WriteGuestText(xen_out_, debugcon_line_);
    debugcon_line_.clear();
  }
}

// console_io is Xen's own console; the ring is the guest's. Both are kept (XTF writes the same
// text to each: choose one with --console-io / --console).
void Machine::ConsoleWrite(std::span<const char> bytes) {
  MutexLock lock(console_mutex_);
  WriteGuestText(xen_out_, bytes);
}

// Guest text is hostile to terminals: filtered unless the user asked for raw output. The
// caller holds console_mutex_ (annotated on the members; the stream is one of them).
void Machine::WriteGuestText(OutputStream& stream, std::span<const char> bytes) {
  if (stream.fd < 0) return;
  if (config_.console_raw) {
    WriteAll(stream.fd, bytes.data(), bytes.size());
    return;
  }
  std::string safe;
  stream.filter.Filter(bytes, &safe);
  WriteAll(stream.fd, safe.data(), safe.size());
}

// CONSOLEIO_read: Xen's console input belongs to Xen's own debug keys, not to a guest; the
// user's input goes to the PV console ring.
size_t Machine::ConsoleRead(std::span<char> out) {
  (void)out;
  return 0;
}

// Ballooning: the KVM memslot stays as it is (removing part of it would cost a slot split and
// ~1 ms per change), so the guest still reaches the gfn; MADV_DONTNEED on our private anonymous
// mapping gives the pages back to the host and they read as zeros until next touched. Xen would
// show the gfn as absent instead (no p2m entry).
void Machine::ReleaseRam(uint64_t gpa, uint64_t size) {
  if (gpa >= ram_size_ || size > ram_size_ - gpa) return;  // the caller checked; never trust it
  uint8_t* host = static_cast<uint8_t*>(ram_) + gpa;
  if (::madvise(host, size, MADV_DONTNEED) != 0) std::memset(host, 0, size);
  memory_.NoteHostWrite(gpa, size);  // a migration must send the zeros (KVM's log can't see them)
}

// A 4 KiB memslot per page, in both KVM and our GuestMemory (slot numbers shared).
Result<> Machine::MapSpecialPage(uint64_t gfn) {
  MutexLock lock(special_mutex_);
  if (special_pages_.count(gfn)) return Fail(XEN_EEXIST, "special page already mapped");
  uint32_t slot = kAcpiSlot + 1;
  for (const auto& [mapped_gfn, page] : special_pages_) slot = std::max(slot, page.slot + 1);
  if (slot >= mem::GuestMemory::kMaxSlots) {
    // Reuse a hole in the numbering before giving up.
    for (slot = kAcpiSlot + 1; slot < mem::GuestMemory::kMaxSlots; ++slot) {
      bool used = false;
      for (const auto& [mapped_gfn, page] : special_pages_) used |= page.slot == slot;
      if (!used) break;
    }
    if (slot >= mem::GuestMemory::kMaxSlots)
      return Fail(XEN_ENOSPC, "no memslot left for a special page");
  }
  void* host =
      ::mmap(nullptr, abi::kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (host == MAP_FAILED) return Fail(XEN_ENOMEM, "mmap special page");
  const uint64_t gpa = gfn << 12;
  if (auto r = vm_->SetMemory(slot, gpa, abi::kPageSize, host); !r) {
    ::munmap(host, abi::kPageSize);
    return r;
  }
  if (auto r = memory_.AddSlot(slot, gpa, abi::kPageSize, host); !r) {
    (void)vm_->SetMemory(slot, gpa, 0, host);
    ::munmap(host, abi::kPageSize);
    return r;
  }
  special_pages_[gfn] = {slot, host};
  return {};
}

void Machine::UnmapSpecialPage(uint64_t gfn) {
  MutexLock lock(special_mutex_);
  auto it = special_pages_.find(gfn);
  if (it == special_pages_.end()) return;
  const SpecialPage page = it->second;
  special_pages_.erase(it);
  // Our readers first (RemoveSlot waits for them), then KVM's view, then the memory.
  (void)memory_.RemoveSlot(page.slot);
  if (vm_->SetMemory(page.slot, gfn << 12, 0, page.host)) ::munmap(page.host, abi::kPageSize);
}

Result<uint64_t> Machine::TranslateGva(uint32_t calling_vcpu, uint64_t gva, xen::Access access) {
  return WalkPageTables(memory_, runners_[calling_vcpu]->Paging(), gva, access);
}

Result<> Machine::InitialiseVcpu(uint32_t target, const vcpu_hvm_context& context) {
  return runners_[target]->Initialise(context);
}
Result<> Machine::UpVcpu(uint32_t target) { return runners_[target]->Up(); }
Result<> Machine::DownVcpu(uint32_t target) {
  runners_[target]->Down();
  return {};
}
bool Machine::VcpuIsUp(uint32_t target) const { return runners_[target]->IsUp(); }

void Machine::SetUpcallVector(uint32_t target, uint8_t vector) {
  injector_->SetUpcallVector(target, vector);
}

void Machine::SetCallbackVector(uint8_t vector) { injector_->SetCallbackVector(vector); }

void Machine::RaiseUpcall(uint32_t target) {
  if (engine_->UpcallPending(target)) injector_->Raise(target);
}

void Machine::SetTimer(uint32_t target, uint64_t deadline_ns, uint64_t period_ns) {
  timers_->Set(target, deadline_ns, period_ns);
}

Result<vcpu_time_info> Machine::VcpuTime(uint32_t target) { return clock_.TimeInfo(target); }

uint64_t Machine::WakeSeq(uint32_t calling_vcpu) { return runners_[calling_vcpu]->WakeSeq(); }
void Machine::Sleep(uint32_t calling_vcpu, uint64_t seq, uint64_t deadline_ns) {
  runners_[calling_vcpu]->Sleep(seq, deadline_ns);
}
void Machine::Yield(uint32_t calling_vcpu) {
  (void)calling_vcpu;
  sched_yield();
}

}  // namespace xenkvm::vmm
