// Per-port event counters that stay exact without a locked instruction per event: each thread
// that raises events counts into a shard of its own (one writer: a relaxed load and store), and
// a reader sums the shards. Shards are per engine, found through a one-entry thread-local
// cache keyed by the engine's unique id, and live as long as the engine (a thread that exits
// keeps its counts). Past kMaxShards threads, the rest share one shard counted atomically.
//
// Lock: mutex_ guards the shard registry and the per-port baselines; counting takes no lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "abi/sync.h"
#include "evtchn/port_table.h"

namespace xenkvm::evtchn {

// Every event raised on a port ends in exactly one of delivered/coalesced/masked/deferred;
// raised() is their sum.
struct PortCounters {
  uint64_t sent = 0;       // EVTCHNOP_send by the guest on this port
  uint64_t delivered = 0;  // newly pending and unmasked: took the selector/queue/upcall path
  uint64_t coalesced = 0;  // already pending
  uint64_t masked = 0;     // newly pending but masked (FIFO: or no control block)
  uint64_t deferred = 0;   // finished later: a page was unmapped, or (FIFO) no array page yet
  uint64_t raised() const { return delivered + coalesced + masked + deferred; }
};

enum class Count : uint8_t { kSent, kDelivered, kCoalesced, kMasked, kDeferred };
inline constexpr uint32_t kCounts = 5;

class PortCounterShards {
 public:
  PortCounterShards();
  PortCounterShards(const PortCounterShards&) = delete;
  PortCounterShards& operator=(const PortCounterShards&) = delete;

  [[gnu::always_inline]] void Add(Port port, Count count) {
    Shard* shard = tls_cache_.id == id_ ? tls_cache_.shard : Attach();
    Block* block = shard->blocks[port / kPortsPerBucket].load(std::memory_order_acquire);
    if (block == nullptr) block = AddBlock(*shard, port / kPortsPerBucket);
    std::atomic<uint64_t>& value = block->counts[port % kPortsPerBucket][uint32_t(count)];
    if (shard->shared)
      value.fetch_add(1, std::memory_order_relaxed);
    else
      value.store(value.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // Counts since the last Restart(port).
  PortCounters Get(Port port) const;
  // A port is allocated again: its counts start from zero (a baseline, as other threads'
  // shards are theirs to write).
  void Restart(Port port);
  // A restored port starts from its saved counts (Get then reports them plus what follows).
  void Seed(Port port, const PortCounters& counts);

 private:
  static constexpr uint32_t kMaxShards = 64;
  struct Block {
    std::array<std::array<std::atomic<uint64_t>, kCounts>, kPortsPerBucket> counts{};
  };
  struct Shard {
    std::thread::id owner;
    bool shared = false;
    std::array<std::atomic<Block*>, kMaxBuckets> blocks{};
    std::vector<std::unique_ptr<Block>> storage;  // written by the owner (shared: mutex_)
  };
  struct TlsCache {
    uint64_t id = 0;
    Shard* shard = nullptr;
  };

  Shard* Attach();
  Block* AddBlock(Shard& shard, uint32_t bucket);
  std::array<uint64_t, kCounts> SumLocked(Port port) const XENKVM_REQUIRES(mutex_);

  static thread_local TlsCache tls_cache_;
  const uint64_t id_;
  mutable Mutex mutex_;
  std::vector<std::unique_ptr<Shard>> shards_ XENKVM_GUARDED_BY(mutex_);
  std::unordered_map<Port, std::array<uint64_t, kCounts>> baselines_ XENKVM_GUARDED_BY(mutex_);
};

}  // namespace xenkvm::evtchn
