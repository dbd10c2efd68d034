// Sharded per-port counters (see port_counters.h).
#include "evtchn/port_counters.h"

#include <algorithm>

namespace xenkvm::evtchn {

namespace {
std::atomic<uint64_t> next_counter_id{1};
}  // namespace

thread_local PortCounterShards::TlsCache PortCounterShards::tls_cache_;

PortCounterShards::PortCounterShards() : id_(next_counter_id.fetch_add(1)) {}

PortCounterShards::Shard* PortCounterShards::Attach() {
  MutexLock lock(mutex_);
  const std::thread::id self = std::this_thread::get_id();
  Shard* shard = nullptr;
  for (auto& s : shards_)
    if (s->owner == self || s->shared) shard = s.get();
  if (shard == nullptr || (shard->shared && shards_.size() < kMaxShards)) {
    shards_.push_back(std::make_unique<Shard>());
    shard = shards_.back().get();
    shard->owner = self;
    shard->shared = shards_.size() == kMaxShards;  // the last one is everybody else's
  }
  tls_cache_ = TlsCache{id_, shard};
  return shard;
}

PortCounterShards::Block* PortCounterShards::AddBlock(Shard& shard, uint32_t bucket) {
  MutexLock lock(mutex_);  // rare: once per thread and bucket
  Block* block = shard.blocks[bucket].load(std::memory_order_acquire);
  if (block) return block;
  shard.storage.push_back(std::make_unique<Block>());
  block = shard.storage.back().get();
  shard.blocks[bucket].store(block, std::memory_order_release);
  return block;
}

std::array<uint64_t, kCounts> PortCounterShards::SumLocked(Port port) const {
  std::array<uint64_t, kCounts> sum{};
  for (const auto& shard : shards_) {
    const Block* block = shard->blocks[port / kPortsPerBucket].load(std::memory_order_acquire);
    if (!block) continue;
    for (uint32_t c = 0; c < kCounts; ++c)
      sum[c] += block->counts[port % kPortsPerBucket][c].load(std::memory_order_relaxed);
  }
  return sum;
}

PortCounters PortCounterShards::Get(Port port) const {
  MutexLock lock(mutex_);
  std::array<uint64_t, kCounts> sum = SumLocked(port);
  if (auto it = baselines_.find(port); it != baselines_.end())
    for (uint32_t c = 0; c < kCounts; ++c) sum[c] -= it->second[c];
  return PortCounters{sum[0], sum[1], sum[2], sum[3], sum[4]};
}

void PortCounterShards::Restart(Port port) {
  MutexLock lock(mutex_);
  std::array<uint64_t, kCounts> sum = SumLocked(port);
  const bool zero = std::all_of(sum.begin(), sum.end(), [](uint64_t v) { return v == 0; });
  if (zero)
    baselines_.erase(port);
  else
    baselines_[port] = sum;
}

void PortCounterShards::Seed(Port port, const PortCounters& counts) {
  MutexLock lock(mutex_);
  const std::array<uint64_t, kCounts> seed = {counts.sent, counts.delivered, counts.coalesced,
                                              counts.masked, counts.deferred};
  std::array<uint64_t, kCounts> baseline = SumLocked(port);
  // Get() subtracts the baseline: sum - (sum - seed) = seed, in modular arithmetic.
  for (uint32_t c = 0; c < kCounts; ++c) baseline[c] -= seed[c];
  baselines_[port] = baseline;
}

}  // namespace xenkvm::evtchn
