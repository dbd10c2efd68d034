// Machine::Save / Machine::Restore: the whole guest in one snapshot file (snapshot/format.h,
// docs/snapshots.md). Sections, in the order they are restored:
//   CONF  the machine's shape (vCPUs, RAM)       RAM   non-zero RAM pages, as runs
//   DOMN  xen::Domain (maps the special pages)    SPCL  special pages' contents
//   EVTC  the event-channel engine                HCPG  hypercall pages
//   CLCK  system time and the guest TSC rate      TIMR  Xen timers (absolute system time)
//   XSTO  the xenstore database                   XSRG  the xenstore ring backend
//   CONS  the console ring backend                VBD   one per --disk: its connection
//   VCPU  one per vCPU: lifecycle and KVM state (loaded on the vCPU threads by Run)
// RAM pages that read as zero (never touched, ballooned out) are not written: a new machine's
// RAM is zero. System time goes on from where it was saved, so deadlines and the guest's
// pvclock (whose TSC is restored too) carry on without a jump backwards.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "snapshot/format.h"
#include "vmm/machine.h"
#include "vmm/timers.h"
#include "vmm/vcpu_runner.h"

namespace xenkvm::vmm {

namespace {

constexpr uint32_t kConf = snapshot::MakeTag("CONF");
constexpr uint32_t kRam = snapshot::MakeTag("RAM ");
constexpr uint32_t kDomain = snapshot::MakeTag("DOMN");
constexpr uint32_t kSpecial = snapshot::MakeTag("SPCL");
constexpr uint32_t kEngine = snapshot::MakeTag("EVTC");
constexpr uint32_t kHypercallPages = snapshot::MakeTag("HCPG");
constexpr uint32_t kClock = snapshot::MakeTag("CLCK");
constexpr uint32_t kTimers = snapshot::MakeTag("TIMR");
constexpr uint32_t kStore = snapshot::MakeTag("XSTO");
constexpr uint32_t kStoreRing = snapshot::MakeTag("XSRG");
constexpr uint32_t kConsoleRing = snapshot::MakeTag("CONS");
constexpr uint32_t kDisk = snapshot::MakeTag("VBD ");
constexpr uint32_t kVcpu = snapshot::MakeTag("VCPU");
constexpr uint64_t kPage = abi::kPageSize;
constexpr auto kSaveWaitForRun = std::chrono::seconds(30);

struct PageRun {
  uint64_t first = 0;  // page number
  uint64_t pages = 0;
};

// Closes an fd when it goes.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

Result<std::vector<std::byte>> LoadOnly(const snapshot::Reader& reader, uint32_t tag) {
  return reader.Load(TRY(reader.Only(tag)));
}

}  // namespace

Result<std::vector<std::vector<std::byte>>> Machine::SaveVcpus() {
  std::vector<std::vector<std::byte>> vcpus(runners_.size());
  TRY(ForEachParkedVcpu([&](uint32_t id, kvm::Vcpu& vcpu) -> Result<> {
    snapshot::Encoder e;
    e.U32(id);
    e.U8(uint8_t(runners_[id]->lifecycle()));
    kvm::VcpuSnapshot state = TRY(kvm::SaveVcpu(vcpu));
    // Parked inside a hypercall (SCHEDOP_block/poll): the restored vCPU runs its `out` again.
    if (auto out_rip = runners_[id]->HypercallInFlightRip()) state.regs.rip = *out_rip;
    state.Encode(e);
    vcpus[id] = e.Take();
    return {};
  }));
  return vcpus;
}

// The RAM section: a header (RAM size, run count, runs), then the runs' bytes. A file holds
// every page that is not zero (a new machine's RAM is zero); a migration's final state holds
// exactly the pages still dirty, zero or not (the destination's RAM has older contents).
Result<> Machine::WriteState(snapshot::Writer& w, const std::vector<std::vector<std::byte>>& vcpus,
                             const mem::DirtyBitmap* ram_pages) {
  TRY(w.Begin());
  snapshot::Encoder conf;
  conf.U32(config_.vcpus);
  conf.U64(config_.memory_mib);
  TRY(w.Section(kConf, conf.bytes()));

  const uint8_t* ram = static_cast<const uint8_t*>(ram_);
  std::vector<PageRun> runs;
  auto add = [&runs](uint64_t page) {
    if (!runs.empty() && runs.back().first + runs.back().pages == page)
      ++runs.back().pages;
    else
      runs.push_back({page, 1});
  };
  if (ram_pages != nullptr) {
    for (uint64_t page : ram_pages->SetPages()) add(page);
  } else {
    for (uint64_t page = 0; page < ram_size_ / kPage; ++page)
      if (!mem::IsZeroPage(ram + page * kPage)) add(page);
  }
  snapshot::Encoder head;
  head.U64(ram_size_);
  head.U32(uint32_t(runs.size()));
  uint64_t data = 0;
  for (const PageRun& r : runs) {
    head.U64(r.first);
    head.U64(r.pages);
    data += r.pages * kPage;
  }
  TRY(w.BeginSection(kRam, head.bytes().size() + data));
  TRY(w.Append(head.bytes()));
  for (const PageRun& r : runs)
    TRY(w.Append(std::as_bytes(std::span(ram + r.first * kPage, r.pages * kPage))));
  TRY(w.EndSection());

  snapshot::Encoder domain;
  domain_->Save(domain);
  TRY(w.Section(kDomain, domain.bytes()));
  snapshot::Encoder special;
  const std::vector<uint64_t> gfns = domain_->SpecialGfns();
  special.U32(uint32_t(gfns.size()));
  std::vector<std::byte> page(kPage);
  for (uint64_t gfn : gfns) {
    TRY(memory_.Read(gfn << 12, page));
    special.U64(gfn);
    special.Raw(page);
  }
  TRY(w.Section(kSpecial, special.bytes()));
  snapshot::Encoder engine;
  engine_->Save(engine);
  TRY(w.Section(kEngine, engine.bytes()));
  snapshot::Encoder pages;
  hypercall_pages_.Save(pages);
  TRY(w.Section(kHypercallPages, pages.bytes()));
  snapshot::Encoder clock;
  clock.U64(clock_.NowNs());
  clock.U32(clock_.tsc_khz());
  TRY(w.Section(kClock, clock.bytes()));
  snapshot::Encoder timers;
  timers.U32(config_.vcpus);
  for (uint32_t v = 0; v < config_.vcpus; ++v) {
    const auto [deadline, period] = timers_->Get(v);
    timers.U64(deadline);
    timers.U64(period);
  }
  TRY(w.Section(kTimers, timers.bytes()));
  snapshot::Encoder store;
  store_.Save(store);
  TRY(w.Section(kStore, store.bytes()));
  snapshot::Encoder store_ring;
  xs_ring_->Save(store_ring);
  TRY(w.Section(kStoreRing, store_ring.bytes()));
  snapshot::Encoder console;
  console_ring_->Save(console);
  TRY(w.Section(kConsoleRing, console.bytes()));
  for (const auto& disk : disks_) {
    snapshot::Encoder vbd;
    vbd.U32(disk->config().devid);
    disk->Save(vbd);
    TRY(w.Section(kDisk, vbd.bytes()));
  }
  for (const auto& v : vcpus) TRY(w.Section(kVcpu, v));
  return w.Finish();
}

Machine::DisksQuiesced::DisksQuiesced(Machine& machine) : machine_(machine) {
  for (const auto& disk : machine_.disks_) disk->Quiesce();
}
Machine::DisksQuiesced::~DisksQuiesced() {
  for (const auto& disk : machine_.disks_) disk->Resume();
}

Result<> Machine::Save(const std::string& path) {
  // A save asked for before Run put the guest's state into the vCPUs (the control socket serves
  // from before the first vCPU runs: `restore --paused`, a fast client) waits for that.
  const auto limit = std::chrono::steady_clock::now() + kSaveWaitForRun;
  while (!running_.load(std::memory_order_acquire)) {
    if (Stopping() || std::chrono::steady_clock::now() > limit)
      return Fail(XEN_EAGAIN, "the guest has not started yet");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  TRY(Pause());
  struct Unpause {
    Machine& m;
    ~Unpause() { (void)m.Resume(); }
  } unpause{*this};
  const DisksQuiesced quiesced(*this);

  // vCPU state first, on their threads.
  const std::vector<std::vector<std::byte>> vcpus = TRY(SaveVcpus());

  const std::string temp = path + ".partial";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return HostFail(errno, "create the snapshot file");
  FdCloser closer{fd};
  snapshot::FdSink sink(fd);
  snapshot::Writer w(sink, snapshot::CurrentHostFacts());
  auto write_all = [&]() -> Result<> {
    TRY(WriteState(w, vcpus, nullptr));
    if (::fsync(fd) != 0) return HostFail(errno, "fsync the snapshot file");
    return {};
  };
  if (auto r = write_all(); !r) {
    ::unlink(temp.c_str());
    return r;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    return HostFail(e, "rename the snapshot file into place");
  }
  return {};
}

Result<Machine::SnapshotShape> Machine::ReadSnapshotShape(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return HostFail(errno, "open the snapshot file");
  FdCloser closer{fd};
  const auto source = TRY(snapshot::FdSource::Open(fd));
  const auto reader = TRY(snapshot::Reader::Open(source, snapshot::CurrentHostFacts()));
  const std::vector<std::byte> conf = TRY(LoadOnly(reader, kConf));
  snapshot::Decoder d(conf);
  SnapshotShape shape{d.U32(), d.U64()};
  TRY(d.Finish());
  return shape;
}

Result<> Machine::Restore(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return HostFail(errno, "open the snapshot file");
  FdCloser closer{fd};
  const auto source = TRY(snapshot::FdSource::Open(fd));
  return RestoreFrom(TRY(snapshot::Reader::Open(source, snapshot::CurrentHostFacts())));
}

// RAM pages outside the RAM section's runs are left as they are: zero in a new machine, what the
// pre-copy rounds wrote in a migration's destination.
Result<> Machine::RestoreFrom(const snapshot::Reader& reader) {
  {
    const std::vector<std::byte> conf = TRY(LoadOnly(reader, kConf));
    snapshot::Decoder d(conf);
    const uint32_t vcpus = d.U32();
    const uint64_t memory_mib = d.U64();
    TRY(d.Finish());
    if (vcpus != config_.vcpus || memory_mib != config_.memory_mib)
      return snapshot::Corrupt("snapshot is of a machine with other vCPUs or RAM");
  }
  // RAM.
  {
    const snapshot::SectionInfo ram = TRY(reader.Only(kRam));
    std::vector<std::byte> head_bytes(std::min<uint64_t>(ram.length, 12));
    TRY(reader.ReadPart(ram, 0, head_bytes));
    snapshot::Decoder head(head_bytes);
    const uint64_t size = head.U64();
    const uint32_t count = head.U32();
    if (!head.ok() || size != ram_size_ || count > ram_size_ / kPage)
      return snapshot::Corrupt("snapshot: bad RAM section");
    std::vector<std::byte> run_bytes(uint64_t(count) * 16);
    TRY(reader.ReadPart(ram, 12, run_bytes));
    snapshot::Decoder runs_in(run_bytes);
    std::vector<PageRun> runs(count);
    uint64_t next = 0, data = 0;
    for (PageRun& r : runs) {
      r.first = runs_in.U64();
      r.pages = runs_in.U64();
      if (r.first < next || r.pages == 0 || r.pages > ram_size_ / kPage - r.first)
        return snapshot::Corrupt("snapshot: bad RAM run");
      next = r.first + r.pages;
      data += r.pages * kPage;
    }
    if (12 + run_bytes.size() + data != ram.length)
      return snapshot::Corrupt("snapshot: RAM section length does not match its runs");
    uint64_t offset = 12 + run_bytes.size();
    uint8_t* dest = static_cast<uint8_t*>(ram_);
    for (const PageRun& r : runs) {
      TRY(reader.ReadPart(
          ram, offset, std::as_writable_bytes(std::span(dest + r.first * kPage, r.pages * kPage))));
      offset += r.pages * kPage;
    }
  }
  // Xen's state, its pages, the engine.
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kDomain));
    snapshot::Decoder d(bytes);
    TRY(domain_->Restore(d));
  }
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kSpecial));
    snapshot::Decoder d(bytes);
    const std::vector<uint64_t> mapped = domain_->SpecialGfns();
    const uint32_t count = d.Count(uint32_t(mapped.size()), 8 + kPage);
    std::vector<std::byte> page(kPage);
    for (uint32_t i = 0; i < count; ++i) {
      const uint64_t gfn = d.U64();
      d.Raw(page);
      if (!d.ok()) break;
      if (std::find(mapped.begin(), mapped.end(), gfn) == mapped.end())
        return snapshot::Corrupt("snapshot: contents for a page that is not special");
      TRY(memory_.Write(gfn << 12, page));
    }
    TRY(d.Finish());
  }
  // PV disks reconnect before the engine: its port table names their endpoints.
  {
    const std::vector<snapshot::SectionInfo> sections = reader.All(kDisk);
    if (sections.size() != disks_.size())
      return snapshot::Corrupt("snapshot has other PV disks than --disk gives");
    std::vector<bool> seen(disks_.size());
    for (const snapshot::SectionInfo& section : sections) {
      const std::vector<std::byte> bytes = TRY(reader.Load(section));
      snapshot::Decoder d(bytes);
      const uint32_t devid = d.U32();
      size_t i = 0;
      while (i < disks_.size() && disks_[i]->config().devid != devid) ++i;
      if (i == disks_.size() || seen[i])
        return snapshot::Corrupt("snapshot has other PV disks than --disk gives");
      seen[i] = true;
      TRY(disks_[i]->Restore(d));
    }
  }
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kEngine));
    snapshot::Decoder d(bytes);
    TRY(engine_->Restore(d));
  }
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kHypercallPages));
    snapshot::Decoder d(bytes);
    TRY(hypercall_pages_.Restore(d));
  }
  auto restored = std::make_unique<Restored>();
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kClock));
    snapshot::Decoder d(bytes);
    const uint64_t system_ns = d.U64();
    restored->tsc_khz = d.U32();
    TRY(d.Finish());
    clock_.RestoreSystemTime(system_ns);
  }
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kTimers));
    snapshot::Decoder d(bytes);
    if (d.U32() != config_.vcpus) d.Invalid("snapshot: timers of another vCPU count");
    restored->timers.resize(config_.vcpus);
    for (auto& [deadline, period] : restored->timers) {
      deadline = d.U64();
      period = d.U64();
    }
    TRY(d.Finish());
  }
  // xenstore and the rings' host side (the store first: the ring's connection lives in it).
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kStore));
    snapshot::Decoder d(bytes);
    TRY(store_.Restore(d));
  }
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kStoreRing));
    snapshot::Decoder d(bytes);
    TRY(xs_ring_->Restore(d));
  }
  {
    const std::vector<std::byte> bytes = TRY(LoadOnly(reader, kConsoleRing));
    snapshot::Decoder d(bytes);
    TRY(console_ring_->Restore(d));
  }
  const std::vector<snapshot::SectionInfo> vcpu_sections = reader.All(kVcpu);
  if (vcpu_sections.size() != config_.vcpus)
    return snapshot::Corrupt("snapshot has another number of vCPUs than this machine");
  restored->vcpus.resize(config_.vcpus);
  restored->lifecycle.resize(config_.vcpus);
  std::vector<bool> seen(config_.vcpus);
  for (const snapshot::SectionInfo& section : vcpu_sections) {
    const std::vector<std::byte> bytes = TRY(reader.Load(section));
    snapshot::Decoder d(bytes);
    const uint32_t id = d.U32();
    const uint8_t lifecycle = d.U8();
    if (id >= config_.vcpus || seen[id] || lifecycle > uint8_t(VcpuState::kUp))
      return snapshot::Corrupt("snapshot: bad vCPU section");
    seen[id] = true;
    restored->lifecycle[id] = lifecycle;
    restored->vcpus[id] = TRY(kvm::VcpuSnapshot::Decode(d));
    TRY(d.Finish());
  }
  restored_ = std::move(restored);
  return {};
}

// The vCPU threads were started with a pause requested: they park before entering the guest
// (vCPU 0 after loading its boot state, which this overwrites; the others waiting to be up).
Result<> Machine::ResumeRestored() {
  TRY(Pause());
  const Restored& r = *restored_;
  TRY(ForEachParkedVcpu([&](uint32_t id, kvm::Vcpu& vcpu) -> Result<> {
    TRY(kvm::RestoreVcpu(vcpu, r.vcpus[id]));
    // pvclock: the guest TSC was put back; pair it with the restored system time.
    clock_.Calibrate(id, TRY(vcpu.GetMsr(0x10)), r.tsc_khz);
    return {};
  }));
  for (uint32_t id = 0; id < runners_.size(); ++id) {
    runners_[id]->RestoreLifecycle(VcpuState(r.lifecycle[id]));
    const auto [deadline, period] = r.timers[id];
    timers_->Set(id, deadline, period);
  }
  for (uint32_t id = 0; id < runners_.size(); ++id) domain_->RefreshVcpuTime(id);
  // What the source still owed each vCPU is in no saved state: a selector bit in its shadow
  // (the event came while its vcpu_info was being remapped; the vCPU would have folded it in at
  // its next entry, a request that was taken but not yet done when it parked) and an upcall on
  // its way (an MSI waiting in the injector's retry, an ExtINT queued for its thread). Fold the
  // shadow in now, then raise again what is pending, as Xen does at every VM entry while
  // upcall_pending is set. One too many is harmless (the handler finds nothing).
  for (uint32_t id = 0; id < runners_.size(); ++id) {
    engine_->SyncVcpu(id);
    RaiseUpcall(id);
  }
  TRY(Resume());
  // Output the rings held when saved (replies, watch events) goes out now, not at the guest's
  // next notification, which may never come if it waits for them.
  xs_ring_->Pump();
  console_ring_->Service();
  for (const auto& disk : disks_) disk->Resume();  // restored queues start quiesced
  return {};
}

}  // namespace xenkvm::vmm
