// Request validation rules, one by one, on decoded requests (no ring, no I/O).
#include "backends/blkif/request.h"

#include <gtest/gtest.h>

#include "tests/blkif/fake_frontend.h"

namespace xenkvm::blkif {
namespace {

class RequestTest : public ::testing::Test {
 protected:
  int16_t Parse(const Request& req) { return ParseRequest(req, limits_, grants_, parsed_); }
  testing::FakeGrants grants_{4};
  DiskLimits limits_{.sectors = 1000, .discard = true, .max_indirect_segments = 16};
  ParsedRequest parsed_;
};

TEST_F(RequestTest, SegmentsBecomeByteRanges) {
  Request req{.operation = BLKIF_OP_WRITE, .nr_segments = 2, .id = 5, .sector_number = 10};
  req.seg[0] = {8, 1, 3};
  req.seg[1] = {9, 0, 7};
  ASSERT_EQ(Parse(req), BLKIF_RSP_OKAY);
  EXPECT_EQ(parsed_.op, Op::kWrite);
  EXPECT_EQ(parsed_.offset, 10u * 512);
  EXPECT_EQ(parsed_.length, 3u * 512 + 4096);
  ASSERT_EQ(parsed_.segments.size(), 2u);
  EXPECT_EQ(parsed_.segments[0].offset, 512);
  EXPECT_EQ(parsed_.segments[0].length, 3 * 512);
}

TEST_F(RequestTest, FlushAloneIgnoresTheSectorNumber) {
  Request req{.operation = BLKIF_OP_FLUSH_DISKCACHE, .sector_number = UINT64_MAX};
  ASSERT_EQ(Parse(req), BLKIF_RSP_OKAY);
  EXPECT_EQ(parsed_.op, Op::kFlush);
  limits_.flush = false;
  EXPECT_EQ(Parse(req), BLKIF_RSP_EOPNOTSUPP);
}

TEST_F(RequestTest, DiscardRangeAndSecureFlag) {
  Request req{.operation = BLKIF_OP_DISCARD,
              .discard_flag = BLKIF_DISCARD_SECURE,
              .sector_number = 990,
              .nr_sectors = 10};
  ASSERT_EQ(Parse(req), BLKIF_RSP_OKAY);
  EXPECT_FALSE(parsed_.secure) << "secure is ignored unless advertised";
  req.nr_sectors = 11;
  EXPECT_EQ(Parse(req), BLKIF_RSP_ERROR);
  limits_.discard = false;
  EXPECT_EQ(Parse(req), BLKIF_RSP_EOPNOTSUPP);
}

TEST_F(RequestTest, IndirectNeedsTheFeatureAndValidPages) {
  const GrantRef page = grants_.Grant(0, /*read_only=*/true);
  for (int i = 0; i < 16; ++i) {
    blkif_request_segment seg{9, 0, 7};
    std::memcpy(grants_.Page(0) + i * sizeof(seg), &seg, sizeof(seg));
  }
  Request req{.operation = BLKIF_OP_INDIRECT, .indirect_op = BLKIF_OP_READ, .nr_segments = 16};
  req.indirect_grefs[0] = page;
  ASSERT_EQ(Parse(req), BLKIF_RSP_OKAY);
  EXPECT_EQ(parsed_.length, 16u * 4096);
  EXPECT_EQ(parsed_.operation, BLKIF_OP_READ) << "answered with indirect_op, as blkback does";
  req.nr_segments = 17;
  EXPECT_EQ(Parse(req), BLKIF_RSP_ERROR);
  limits_.max_indirect_segments = 0;
  EXPECT_EQ(Parse(req), BLKIF_RSP_EOPNOTSUPP);
  EXPECT_EQ(grants_.active_mappings(), 0);
}

TEST_F(RequestTest, MapSegmentsRefusesReadsIntoReadOnlyGrants) {
  const GrantRef ro = grants_.Grant(1, /*read_only=*/true);
  Request req{.operation = BLKIF_OP_READ, .nr_segments = 1};
  req.seg[0] = {ro, 0, 7};
  ASSERT_EQ(Parse(req), BLKIF_RSP_OKAY);
  std::vector<GrantMapping> maps;
  EXPECT_FALSE(MapSegments(parsed_, grants_, maps));
  req.operation = BLKIF_OP_WRITE;
  ASSERT_EQ(Parse(req), BLKIF_RSP_OKAY);
  EXPECT_TRUE(MapSegments(parsed_, grants_, maps));
  EXPECT_EQ(grants_.active_mappings(), 1);
}

}  // namespace
}  // namespace xenkvm::blkif
