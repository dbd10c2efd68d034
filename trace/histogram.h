// Latency histograms for `xenkvm run --stats`: power-of-two buckets of nanoseconds, updated
// lock-free from any thread, read at the end (percentiles are bucket upper bounds).
//
// Stats: the histograms a run keeps when --stats is given; Active() is null otherwise, so a
// run without --stats pays one relaxed load per measuring point.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>

namespace xenkvm::trace {

class Histogram {
 public:
  // Bucket b holds values in [2^(b-1), 2^b) ns; bucket 0 holds 0, bucket 64 reaches 2^64-1.
  static constexpr int kBuckets = 65;

  void Record(uint64_t ns) {
    buckets_[BucketOf(ns)].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
  }
  static int BucketOf(uint64_t ns) { return ns == 0 ? 0 : 64 - __builtin_clzll(ns); }
  // Largest value bucket b holds.
  static uint64_t UpperBound(int b) {
    return b == 0 ? 0 : b >= 64 ? UINT64_MAX : (uint64_t{1} << b) - 1;
  }

  uint64_t Count() const;
  uint64_t MeanNs() const;
  // The upper bound of the bucket holding the p-th percentile (0 < p <= 100); 0 if empty.
  uint64_t PercentileNs(double p) const;
  uint64_t BucketCount(int b) const { return buckets_[b].load(std::memory_order_relaxed); }
  // One line: count, mean, p50/p90/p99/max bucket bounds, then the non-empty buckets.
  void Print(std::FILE* out, const char* title) const;

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> sum_{0};
};

struct Stats {
  Histogram hypercall;       // one hypercall's service time in the VMM (exit decoded → result)
  Histogram send_to_upcall;  // EVTCHNOP_send's exit → the upcall injected (MSI or ExtINT)
};

// The start of the hypercall this thread is serving (0: none), so an upcall raised inside it
// can be timed from the guest's exit (send → upcall).
namespace detail {
inline thread_local uint64_t hypercall_start_ns = 0;
}
inline void SetHypercallStart(uint64_t ns) { detail::hypercall_start_ns = ns; }
inline uint64_t HypercallStart() { return detail::hypercall_start_ns; }

#ifndef XENKVM_TRACE_DISABLED
namespace detail {
inline std::atomic<Stats*> active_stats{nullptr};
}
inline Stats* ActiveStats() { return detail::active_stats.load(std::memory_order_relaxed); }
inline void SetActiveStats(Stats* s) { detail::active_stats.store(s, std::memory_order_release); }
#else
constexpr Stats* ActiveStats() { return nullptr; }
inline void SetActiveStats(Stats*) {}
#endif

}  // namespace xenkvm::trace
