// The blkif backend driven by an in-process synthetic frontend (no KVM): keeps `depth` requests
// in flight on one queue and prints IOPS and MB/s as one JSON line, for bench/blkif_vs_fio.py to
// set beside fio on the same file. Modes: rand4k (one 4 KiB segment at a random aligned sector),
// seq1m (1 MiB sequential reads as indirect requests of 256 segments).
// `persistent` maps every grant once and reuses it, as persistent grants would: the difference
// to the default run is what persistent grants could save on the backend side.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>

#include "backends/blkif/backend.h"
#include "tests/blkif/fake_frontend.h"

namespace xenkvm::blkif {
namespace {

// Keeps each grant mapped after its first use (the backend half of persistent grants).
class PersistentGrants : public GrantAccess {
 public:
  explicit PersistentGrants(GrantAccess& inner) : inner_(inner) {}
  Result<GrantMapping> Map(GrantRef ref, bool writable) override {
    MutexLock lock(mutex_);
    auto it = cache_.find(ref);
    if (it == cache_.end()) {
      auto map = inner_.Map(ref, writable);
      if (!map) return tl::unexpected(map.error());
      it = cache_.emplace(ref, std::move(*map)).first;
    }
    return GrantMapping(this, it->second.page(), 0);
  }

 protected:
  void Release(uintptr_t) override {}

 private:
  GrantAccess& inner_;
  Mutex mutex_;
  std::map<GrantRef, GrantMapping> cache_ XENKVM_GUARDED_BY(mutex_);
};

int Main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: blkif_bench FILE rand4k|seq1m DEPTH SECONDS [persistent]\n");
    return 2;
  }
  const std::string path = argv[1], mode = argv[2];
  const uint32_t depth = uint32_t(std::atoi(argv[3]));
  const double seconds = std::atof(argv[4]);
  const bool persistent = argc > 5 && std::string(argv[5]) == "persistent";
  const bool seq = mode == "seq1m";
  const uint32_t segs = seq ? 256 : 1;
  if (depth == 0 || depth > 128) return 2;

  auto opened = BlkifBackend::Open(DiskOptions{.path = path, .read_only = true, .max_queues = 1});
  if (!opened) {
    std::fprintf(stderr, "open: %s\n", opened.error().message);
    return 1;
  }
  auto& backend = **opened;
  uint32_t order = 0;
  while (RingEntries(Abi::k64, order) < depth) ++order;
  // Ring pages, then per slot: one indirect page (seq) and `segs` data pages.
  const uint32_t ring_pages = 1u << order;
  const uint32_t per_slot = segs + (seq ? 1 : 0);
  testing::FakeGrants memory(ring_pages + depth * per_slot);
  PersistentGrants cached(memory);
  GrantAccess& grants = persistent ? static_cast<GrantAccess&>(cached) : memory;
  testing::SyntheticFrontend front(memory, 0, Abi::k64, order);
  std::vector<GrantRef> data_refs, indirect_refs;
  for (uint32_t slot = 0; slot < depth; ++slot) {
    const uint32_t base = ring_pages + slot * per_slot;
    if (seq) {
      indirect_refs.push_back(memory.Grant(base, true));
      for (uint32_t s = 0; s < segs; ++s) {
        const blkif_request_segment seg{memory.Grant(base + 1 + s), 0, 7};
        std::memcpy(memory.Page(base) + s * sizeof(seg), &seg, sizeof(seg));
      }
    } else {
      data_refs.push_back(memory.Grant(base));
    }
  }
  ConnectionParams params{
      .abi = Abi::k64, .ring_page_order = order, .queues = {QueueParams{front.ring_refs(), 1}}};
  if (!backend.Connect(params, grants, [&](uint32_t) { front.Notified(); })) return 1;

  const uint64_t disk_sectors = backend.features().sectors;
  const uint64_t request_sectors = uint64_t(segs) * kSectorsPerPage;
  std::mt19937_64 rng(7);
  uint64_t next_seq = 0;
  auto issue = [&](uint32_t slot) {
    uint64_t sector;
    if (seq) {
      sector = next_seq;
      next_seq = (next_seq + request_sectors) % (disk_sectors / request_sectors * request_sectors);
      blkif_request_indirect r{};
      r.operation = BLKIF_OP_INDIRECT;
      r.indirect_op = BLKIF_OP_READ;
      r.nr_segments = uint16_t(segs);
      r.id = slot;
      r.sector_number = sector;
      r.indirect_grefs[0] = indirect_refs[slot];
      front.Put(r);
    } else {
      sector = rng() % (disk_sectors / kSectorsPerPage) * kSectorsPerPage;
      blkif_request r{};
      r.operation = BLKIF_OP_READ;
      r.nr_segments = 1;
      r.id = slot;
      r.sector_number = sector;
      r.seg[0] = {data_refs[slot], 0, 7};
      front.Put(r);
    }
  };
  auto kick = [&] {
    if (front.Push()) backend.QueueEndpoint(0)->OnGuestSend(1);
  };

  for (uint32_t slot = 0; slot < depth; ++slot) issue(slot);
  kick();
  uint64_t done = 0, errors = 0;
  std::vector<testing::SyntheticFrontend::Response> rsps;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  for (;;) {
    const uint32_t seen = front.notifications();
    rsps.clear();
    front.Collect(rsps);
    if (rsps.empty()) {
      front.WaitNotification(seen);
      continue;
    }
    for (const auto& r : rsps) {
      ++done;
      errors += r.status != BLKIF_RSP_OKAY;
    }
    if (std::chrono::steady_clock::now() >= end) break;
    for (const auto& r : rsps) issue(uint32_t(r.id));
    kick();
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  backend.Disconnect();
  const double iops = double(done) / elapsed;
  std::printf(
      "{\"mode\": \"%s\", \"depth\": %u, \"persistent\": %s, \"iops\": %.0f, \"mbps\": %.1f, "
      "\"errors\": %llu, \"grant_maps\": %llu, \"dio_align\": %u}\n",
      mode.c_str(), depth, persistent ? "true" : "false", iops,
      iops * double(request_sectors * kSectorSize) / 1e6, (unsigned long long)errors,
      (unsigned long long)memory.maps(), backend.direct_alignment());
  return errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace xenkvm::blkif

int main(int argc, char** argv) { return xenkvm::blkif::Main(argc, argv); }
