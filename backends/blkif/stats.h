// Per-disk counters for `--stats`: bumped by the I/O threads (relaxed atomics), read anywhere.
#pragma once

#include <atomic>
#include <cstdint>

namespace xenkvm::blkif {

struct DiskStatsSnapshot {
  uint64_t requests = 0;  // answered requests, any outcome
  uint64_t reads = 0, writes = 0, flushes = 0, discards = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t errors = 0;  // answered with BLKIF_RSP_ERROR or BLKIF_RSP_EOPNOTSUPP
};

struct DiskStats {
  std::atomic<uint64_t> requests{0}, reads{0}, writes{0}, flushes{0}, discards{0};
  std::atomic<uint64_t> read_bytes{0}, write_bytes{0}, errors{0};

  DiskStatsSnapshot Snapshot() const {
    const auto get = [](const std::atomic<uint64_t>& v) {
      return v.load(std::memory_order_relaxed);
    };
    return {get(requests), get(reads),      get(writes),      get(flushes),
            get(discards), get(read_bytes), get(write_bytes), get(errors)};
  }
};

}  // namespace xenkvm::blkif
