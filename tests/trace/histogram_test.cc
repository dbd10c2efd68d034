// Latency histograms: bucket edges, percentiles as bucket upper bounds, concurrent updates.
#include "trace/histogram.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace xenkvm::trace {
namespace {

TEST(Histogram, BucketEdges) {
  EXPECT_EQ(Histogram::BucketOf(0), 0);
  EXPECT_EQ(Histogram::BucketOf(1), 1);
  EXPECT_EQ(Histogram::BucketOf(2), 2);
  EXPECT_EQ(Histogram::BucketOf(3), 2);
  EXPECT_EQ(Histogram::BucketOf(4), 3);
  EXPECT_EQ(Histogram::BucketOf(UINT64_MAX), Histogram::kBuckets - 1);
  EXPECT_EQ(Histogram::UpperBound(Histogram::kBuckets - 1), UINT64_MAX);
  Histogram h;
  h.Record(UINT64_MAX);  // the last bucket exists
  EXPECT_EQ(h.BucketCount(Histogram::kBuckets - 1), 1u);
}

TEST(Histogram, EmptyIsZero) {
  Histogram h;
  EXPECT_EQ(h.Count(), 0u);
  EXPECT_EQ(h.MeanNs(), 0u);
  EXPECT_EQ(h.PercentileNs(50), 0u);
}

TEST(Histogram, PercentilesAreBucketUpperBounds) {
  Histogram h;
  for (int i = 0; i < 90; ++i) h.Record(1000);  // bucket [512, 1023]
  for (int i = 0; i < 10; ++i) h.Record(100000);
  EXPECT_EQ(h.Count(), 100u);
  EXPECT_EQ(h.MeanNs(), (90 * 1000 + 10 * 100000) / 100u);
  EXPECT_EQ(h.PercentileNs(50), 1023u);
  EXPECT_EQ(h.PercentileNs(90), 1023u);
  EXPECT_EQ(h.PercentileNs(91), 131071u);
  EXPECT_EQ(h.PercentileNs(100), 131071u);
}

TEST(Histogram, ConcurrentRecordsAllCount) {
  Histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) h.Record(uint64_t(t + 1) * 100);
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(h.Count(), 40000u);
  EXPECT_EQ(h.MeanNs(), 250u);
}

}  // namespace
}  // namespace xenkvm::trace
