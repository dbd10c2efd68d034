// Live migration (snapshot/stream.h, docs/migration.md): Machine::MigrateOut on the source,
// ReceiveShape / ReceiveMigration on the destination.
//
// Source: RAM goes over while the guest runs, in rounds: the first sends every page that is not
// zero (the destination's RAM starts zero), each later one the pages written since the round
// before, until few are left, the set stops shrinking, or kMaxRounds. Then the guest is paused
// and the rest goes as one snapshot (STAT): the pages still dirty and every component's state.
//
// Which pages are dirty. KVM's dirty log (kvm/dirty_log.h) sees the guest's writes. The VMM
// writes guest RAM too, through its own mapping, which KVM does not see: hypercall results,
// the engine's event bits in shared_info and vcpu_info (through cached mappings, written long
// after they were made), backends' ring and granted pages. Marking each write would mean
// touching every write path (and cached pointers write with plain atomics). Instead every page
// the VMM gets a host pointer to while the migration runs is recorded (GuestMemory::
// TrackTranslations, which also makes cached mappings translate again, so pointers kept from
// before are recorded too), as are RAM pages ballooning zeroes behind every mapping
// (GuestMemory::NoteHostWrite), and all of those pages are sent again in the final stop-and-copy.
// They are few (shared_info, vcpu_info, hypercall argument pages, rings) and the vCPUs are
// paused then. Special pages outside RAM travel whole in the state's SPCL section anyway.
// A grant mapping a backend made before the migration began and still holds (a PV disk's ring
// pages) was never translated while tracking: every page the grant table has pinned goes in
// the final copy as well.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "kvm/dirty_log.h"
#include "vmm/machine.h"

namespace xenkvm::vmm {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPage = abi::kPageSize;
// Pre-copy stops once at most this many pages are dirty (one frame's worth) ...
constexpr uint64_t kConvergedPages = snapshot::kMaxBatchPages;
// ... or after this many rounds, or once a round no longer shrinks the set.
constexpr uint32_t kMaxRounds = 30;
// How long each side waits for the other's next bytes (the source pauses the guest, at most
// Machine::kPauseTimeout, and writes the state in between).
constexpr auto kStreamIdle = std::chrono::seconds(60);
// The longest frame either side takes: the state holds at most all of RAM and the rest.
constexpr uint64_t kMaxStateOverhead = 64u << 20;
constexpr uint64_t kMaxReplyFrame = 4096;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Waits for the destination's answer: `want`, or FAIL with its line.
Result<> Expect(snapshot::Channel& channel, uint32_t want, std::string* failure) {
  snapshot::Frame frame = TRY(channel.Receive(kMaxReplyFrame, kStreamIdle));
  if (frame.tag == want) return {};
  if (frame.tag == snapshot::kFailFrame) {
    failure->assign(reinterpret_cast<const char*>(frame.payload.data()), frame.payload.size());
    return Fail(XEN_EINVAL, "the destination refused the guest");
  }
  return snapshot::Corrupt("migration stream: the destination answered out of order");
}

}  // namespace

Machine::MigrationReport Machine::MigrateOut(snapshot::Channel& channel) {
  MigrationReport report;
  if (migrating_.exchange(true)) {
    report.error = "a migration is already in progress";
    return report;
  }
  struct Done {
    std::atomic<bool>& flag;
    ~Done() { flag = false; }
  } done{migrating_};
  const auto start = Clock::now();
  const uint64_t ram_pages = ram_size_ / kPage;
  const uint8_t* ram = static_cast<const uint8_t*>(ram_);
  std::string failure;  // the destination's own line, when it sent one
  bool paused = false, committed = false;
  Clock::time_point paused_at;

  auto send_pages = [&](auto&& each_page) -> Result<> {
    snapshot::PageBatch batch;
    Result<> r;
    each_page([&](uint64_t page) -> bool {
      batch.Add(page, std::span<const std::byte, 4096>(
                          reinterpret_cast<const std::byte*>(ram + page * kPage), 4096));
      ++report.pages_sent;
      if (batch.full()) {
        r = channel.Send(snapshot::kPagesFrame, batch.Encode());
        batch.Clear();
      }
      return bool(r);
    });
    TRY(r);
    if (batch.count() > 0) TRY(channel.Send(snapshot::kPagesFrame, batch.Encode()));
    return {};
  };

  auto run = [&]() -> Result<> {
    snapshot::Hello hello{snapshot::CurrentHostFacts(), config_.vcpus, config_.memory_mib};
    TRY(channel.Send(snapshot::kHelloFrame, snapshot::EncodeHello(hello)));

    // Logging on before the first page is read: a write during round 1 is seen in round 2.
    mem::DirtyBitmap vmm_pages(ram_pages);
    memory_.TrackTranslations(&vmm_pages);
    struct Untrack {
      mem::GuestMemory& memory;
      ~Untrack() { memory.TrackTranslations(nullptr); }
    } untrack{memory_};
    kvm::DirtyLog log = TRY(kvm::DirtyLog::Start(*vm_, kRamSlot, 0, ram_size_, ram_));

    report.rounds = 1;
    TRY(send_pages([&](auto&& send) {
      for (uint64_t page = 0; page < ram_pages; ++page)
        if (!mem::IsZeroPage(ram + page * kPage) && !send(page)) return;
    }));
    mem::DirtyBitmap dirty(ram_pages);
    uint64_t previous = UINT64_MAX;
    for (;;) {
      dirty.Merge(TRY(log.Fetch()));
      const uint64_t count = dirty.Count();
      if (count <= kConvergedPages || count >= previous || report.rounds >= kMaxRounds) break;
      previous = count;
      ++report.rounds;
      const std::vector<uint64_t> pages = dirty.SetPages();
      dirty.Clear();
      TRY(send_pages([&](auto&& send) {
        for (uint64_t page : pages)
          if (!send(page)) return;
      }));
    }

    // Stop and copy: what is still dirty, what the VMM may have written, and the state.
    TRY(Pause());
    paused = true;
    paused_at = Clock::now();
    const DisksQuiesced quiesced(*this);
    dirty.Merge(TRY(log.Fetch()));
    dirty.Merge(vmm_pages);
    // Pages a backend mapped before the migration began and still holds (a PV disk's rings)
    // were written through pointers no tracking saw: they go again too.
    for (uint64_t gfn : domain_->grants().MappedGfns())
      if (gfn < ram_pages) dirty.Mark(gfn);
    report.final_pages = dirty.Count();
    const std::vector<std::vector<std::byte>> vcpus = TRY(SaveVcpus());
    snapshot::VectorSink sink;
    snapshot::Writer writer(sink, snapshot::CurrentHostFacts());
    TRY(WriteState(writer, vcpus, &dirty));
    TRY(channel.Send(snapshot::kStateFrame, sink.bytes()));
    TRY(Expect(channel, snapshot::kReadyFrame, &failure));
    // From here the destination may run the guest: this side must not, whatever happens.
    TRY(channel.Send(snapshot::kGoFrame, {}));
    committed = true;
    TRY(Expect(channel, snapshot::kResumedFrame, &failure));
    return {};
  };

  const Result<> r = run();
  const auto end = Clock::now();
  report.total_ms = Ms(end - start);
  report.bytes = channel.bytes_sent();
  if (paused) report.downtime_ms = Ms(end - paused_at);
  if (r) {
    report.ok = true;
    return report;
  }
  report.error = Describe(r.error());
  if (!failure.empty()) report.error += ": " + failure;
  // A destination that answered FAIL, even after GO, is not running the guest. Without an
  // answer after GO it may be: the guest stays paused here for the operator to decide.
  if (committed && failure.empty()) {
    report.paused = true;
    report.error +=
        " (after the destination was told to run the guest: it stays paused here;"
        " resume it only if the destination is not running it)";
  } else if (paused) {
    (void)Resume();
  }
  return report;
}

Result<Machine::SnapshotShape> Machine::ReceiveShape(snapshot::Channel& channel) {
  const snapshot::Frame frame = TRY(channel.Receive(kMaxReplyFrame, kStreamIdle));
  if (frame.tag != snapshot::kHelloFrame)
    return snapshot::Corrupt("not a xenkvm migration stream (no HELO frame)");
  const snapshot::Hello hello = TRY(snapshot::DecodeHello(frame.payload));
  TRY(snapshot::CheckHostFacts(hello.facts, snapshot::CurrentHostFacts()));
  return SnapshotShape{hello.vcpus, hello.memory_mib};
}

Result<> Machine::ReceiveMigration(snapshot::Channel& channel) {
  auto receive = [&]() -> Result<> {
    const uint64_t ram_pages = ram_size_ / kPage;
    uint8_t* ram = static_cast<uint8_t*>(ram_);
    for (;;) {
      const snapshot::Frame frame =
          TRY(channel.Receive(ram_size_ + kMaxStateOverhead, kStreamIdle));
      if (frame.tag == snapshot::kPagesFrame) {
        TRY(snapshot::DecodePages(frame.payload, ram_pages,
                                  [ram](uint64_t page, std::span<const std::byte> bytes) {
                                    if (bytes.empty())
                                      std::memset(ram + page * kPage, 0, kPage);
                                    else
                                      std::memcpy(ram + page * kPage, bytes.data(), kPage);
                                  }));
        continue;
      }
      if (frame.tag != snapshot::kStateFrame)
        return snapshot::Corrupt("migration stream: a frame out of order");
      const snapshot::SpanSource source(frame.payload);
      return RestoreFrom(TRY(snapshot::Reader::Open(source, snapshot::CurrentHostFacts())));
    }
  };
  if (auto r = receive(); !r) {
    const std::string line = Describe(r.error());
    (void)channel.Send(snapshot::kFailFrame, std::as_bytes(std::span(line)));
    return r;
  }
  TRY(channel.Send(snapshot::kReadyFrame, {}));
  const snapshot::Frame go = TRY(channel.Receive(0, kStreamIdle));
  if (go.tag != snapshot::kGoFrame)
    return snapshot::Corrupt("migration stream: the source did not commit");
  return {};
}

}  // namespace xenkvm::vmm
