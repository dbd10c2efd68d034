// Latency histograms; see histogram.h.
#include "trace/histogram.h"

#include <cinttypes>

namespace xenkvm::trace {

uint64_t Histogram::Count() const {
  uint64_t n = 0;
  for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
  return n;
}

uint64_t Histogram::MeanNs() const {
  const uint64_t n = Count();
  return n == 0 ? 0 : sum_.load(std::memory_order_relaxed) / n;
}

uint64_t Histogram::PercentileNs(double p) const {
  const uint64_t n = Count();
  if (n == 0) return 0;
  // The rank of the p-th percentile, 1-based, rounded up (p = 100 is the largest value).
  auto rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(n));
  if (static_cast<double>(rank) < p / 100.0 * static_cast<double>(n)) ++rank;
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += BucketCount(b);
    if (seen >= rank) return UpperBound(b);
  }
  return UpperBound(kBuckets - 1);
}

void Histogram::Print(std::FILE* out, const char* title) const {
  std::fprintf(out,
               "  %s: n=%" PRIu64 " mean=%" PRIu64 "ns p50<=%" PRIu64 " p90<=%" PRIu64
               " p99<=%" PRIu64 " max<=%" PRIu64 "\n   ",
               title, Count(), MeanNs(), PercentileNs(50), PercentileNs(90), PercentileNs(99),
               PercentileNs(100));
  for (int b = 0; b < kBuckets; ++b) {
    if (const uint64_t c = BucketCount(b); c != 0)
      std::fprintf(out, " <=%" PRIu64 ":%" PRIu64, UpperBound(b), c);
  }
  std::fputc('\n', out);
}

}  // namespace xenkvm::trace
