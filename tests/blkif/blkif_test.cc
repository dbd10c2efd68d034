// The blkif backend end to end against a synthetic frontend over fake grants: data paths in both
// layouts, multi-page and multi-queue rings, read-only disks, hostile requests and ring indexes,
// quiesce. Real io_uring on a temporary image file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "backends/blkif/backend.h"
#include "tests/blkif/fake_frontend.h"

namespace xenkvm::blkif {
namespace {

using testing::FakeGrants;
using testing::SyntheticFrontend;
using Response = SyntheticFrontend::Response;

constexpr uint64_t kImageBytes = 4 << 20;

class ImageFile {
 public:
  ImageFile() {
    char name[] = "/tmp/xenkvm_blkif_XXXXXX";
    const int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    path_ = name;
    std::vector<uint8_t> data(kImageBytes);
    for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i / kSectorSize * 7 + i);
    EXPECT_EQ(pwrite(fd, data.data(), data.size(), 0), ssize_t(data.size()));
    close(fd);
  }
  ~ImageFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }
  std::vector<uint8_t> Read(uint64_t offset, size_t len) const {
    std::vector<uint8_t> out(len);
    const int fd = open(path_.c_str(), O_RDONLY);
    EXPECT_EQ(pread(fd, out.data(), len, off_t(offset)), ssize_t(len));
    close(fd);
    return out;
  }

 private:
  std::string path_;
};

uint8_t Expected(uint64_t disk_offset) {
  return uint8_t(disk_offset / kSectorSize * 7 + disk_offset);
}

// Request builders for either layout.
template <class Req>
Req Rw(uint8_t op, uint64_t id, uint64_t sector,
       std::initializer_list<blkif_request_segment> segs) {
  Req r{};
  r.operation = op;
  r.nr_segments = uint8_t(segs.size());
  r.id = id;
  r.sector_number = sector;
  size_t i = 0;
  for (const auto& s : segs) r.seg[i++] = s;
  return r;
}

template <class Req>
Req Discard(uint64_t id, uint64_t sector, uint64_t sectors) {
  Req r{};
  r.operation = BLKIF_OP_DISCARD;
  r.id = id;
  r.sector_number = sector;
  r.nr_sectors = sectors;
  return r;
}

template <class Req>
Req Indirect(uint8_t op, uint64_t id, uint64_t sector, uint16_t nseg,
             std::initializer_list<GrantRef> pages) {
  Req r{};
  r.operation = BLKIF_OP_INDIRECT;
  r.indirect_op = op;
  r.nr_segments = nseg;
  r.id = id;
  r.sector_number = sector;
  size_t i = 0;
  for (GrantRef g : pages) r.indirect_grefs[i++] = g;
  return r;
}

class BlkifTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kRingPages = 64;  // pages 0..63 hold rings, data pages follow

  void Open(bool read_only = false, uint32_t max_indirect_segments = 1024) {
    auto backend = BlkifBackend::Open(DiskOptions{.path = image_.path(),
                                                  .read_only = read_only,
                                                  .max_indirect_segments = max_indirect_segments});
    ASSERT_TRUE(backend);
    backend_ = std::move(*backend);
  }

  // Sets up `queues` frontends and connects the backend to them.
  void Connect(Abi abi, uint32_t order, uint32_t queues) {
    ConnectionParams params{.abi = abi, .ring_page_order = order, .queues = {}};
    for (uint32_t q = 0; q < queues; ++q) {
      fronts_.push_back(std::make_unique<SyntheticFrontend>(grants_, q * 16, abi, order));
      params.queues.push_back(QueueParams{fronts_.back()->ring_refs(), 10 + q});
    }
    ASSERT_TRUE(backend_->Connect(params, grants_, [this](uint32_t q) { fronts_[q]->Notified(); }));
  }

  // A data page granted to the backend; returns its ref.
  GrantRef DataPage(uint32_t n, bool read_only = false) {
    return grants_.Grant(kRingPages + n, read_only);
  }
  uint8_t* Data(uint32_t n) { return grants_.Page(kRingPages + n); }

  void Send(SyntheticFrontend& front, uint32_t q = 0) {
    if (front.Push()) backend_->QueueEndpoint(q)->OnGuestSend(10 + q);
  }

  std::vector<Response> Run(SyntheticFrontend& front, size_t count, uint32_t q = 0) {
    Send(front, q);
    std::vector<Response> out;
    front.WaitFor(out, count);
    EXPECT_EQ(out.size(), count);
    return out;
  }

  void TearDown() override {
    if (backend_) backend_->Disconnect();
    EXPECT_EQ(grants_.active_mappings(), 0) << "grant mappings leaked";
  }

  ImageFile image_;
  FakeGrants grants_{1024};
  std::unique_ptr<BlkifBackend> backend_;
  std::vector<std::unique_ptr<SyntheticFrontend>> fronts_;
};

int16_t StatusOf(const std::vector<Response>& rsps, uint64_t id) {
  for (const auto& r : rsps)
    if (r.id == id) return r.status;
  ADD_FAILURE() << "no response for id " << id;
  return 1;
}

TEST_F(BlkifTest, ReadsAndWritesWithDataVerification64) {
  Open();
  Connect(Abi::k64, 0, 1);
  auto& front = *fronts_[0];
  // Read sectors 16..23 (one page) and 24..25 into the middle of another page.
  const GrantRef a = DataPage(0), b = DataPage(1);
  front.Put(Rw<abi64::Request>(BLKIF_OP_READ, 1, 16, {{a, 0, 7}, {b, 2, 3}}));
  auto rsps = Run(front, 1);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  EXPECT_EQ(rsps[0].operation, BLKIF_OP_READ);
  for (size_t i = 0; i < kPageSize; ++i) ASSERT_EQ(Data(0)[i], Expected(16 * 512 + i));
  for (size_t i = 0; i < 1024; ++i) ASSERT_EQ(Data(1)[1024 + i], Expected(24 * 512 + i));
  EXPECT_EQ(Data(1)[0], 0) << "wrote outside the segment";

  // Write a pattern to sectors 100..107 from one page, check the file, read it back elsewhere.
  const GrantRef w = DataPage(2, /*read_only=*/true), r = DataPage(3);
  for (size_t i = 0; i < kPageSize; ++i) Data(2)[i] = uint8_t(i * 13 + 5);
  front.Put(Rw<abi64::Request>(BLKIF_OP_WRITE, 2, 100, {{w, 0, 7}}));
  front.Put(Rw<abi64::Request>(BLKIF_OP_READ, 3, 100, {{r, 0, 7}}));
  rsps.clear();
  Send(front);
  front.WaitFor(rsps, 2);
  ASSERT_EQ(rsps.size(), 2u);
  EXPECT_EQ(StatusOf(rsps, 2), BLKIF_RSP_OKAY);
  EXPECT_EQ(StatusOf(rsps, 3), BLKIF_RSP_OKAY);
  const auto file = image_.Read(100 * 512, kPageSize);
  EXPECT_EQ(std::memcmp(file.data(), Data(2), kPageSize), 0);
  // The read was submitted with the write: it sees either the old or the new data, whole sectors.
  const auto stats = backend_->Stats();
  EXPECT_EQ(stats.requests, 3u);
  EXPECT_EQ(stats.writes, 1u);
  EXPECT_EQ(stats.write_bytes, kPageSize);
  EXPECT_EQ(stats.read_bytes, kPageSize + 1024 + kPageSize);
  EXPECT_EQ(stats.errors, 0u);
}

// Writes, a barrier, then reads of the same sectors, all in one batch: the barrier waits for the
// writes and the reads wait for the barrier, so every read sees its write.
TEST_F(BlkifTest, BarrierOrdersTheRequestsAroundIt) {
  Open();
  Connect(Abi::k64, 0, 1);
  auto& front = *fronts_[0];
  for (uint32_t i = 0; i < 8; ++i) {
    std::memset(Data(i), int(0x40 + i), kPageSize);
    front.Put(Rw<abi64::Request>(BLKIF_OP_WRITE, i, 300 + i * 8, {{DataPage(i), 0, 7}}));
  }
  front.Put(Rw<abi64::Request>(BLKIF_OP_WRITE_BARRIER, 8, 0, {}));
  for (uint32_t i = 0; i < 8; ++i)
    front.Put(Rw<abi64::Request>(BLKIF_OP_READ, 9 + i, 300 + i * 8, {{DataPage(10 + i), 0, 7}}));
  auto rsps = Run(front, 17);
  for (uint64_t id = 0; id < 17; ++id) EXPECT_EQ(StatusOf(rsps, id), BLKIF_RSP_OKAY) << id;
  // The barrier is answered after every write and before any read.
  size_t barrier_at = 0;
  for (size_t i = 0; i < rsps.size(); ++i)
    if (rsps[i].id == 8) barrier_at = i;
  EXPECT_EQ(barrier_at, 8u);
  for (uint32_t i = 0; i < 8; ++i) EXPECT_EQ(Data(10 + i)[123], 0x40 + i) << i;
}

TEST_F(BlkifTest, FlushBarrierAndDiscard) {
  Open();
  Connect(Abi::k64, 0, 1);
  auto& front = *fronts_[0];
  const GrantRef w = DataPage(0), r = DataPage(1);
  std::memset(Data(0), 0xab, kPageSize);
  front.Put(Rw<abi64::Request>(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, {}));
  front.Put(Rw<abi64::Request>(BLKIF_OP_WRITE_BARRIER, 2, 0, {}));
  // A flush carrying data: flush, then write.
  front.Put(Rw<abi64::Request>(BLKIF_OP_FLUSH_DISKCACHE, 3, 200, {{w, 0, 7}}));
  auto rsps = Run(front, 3);
  for (uint64_t id : {1, 2, 3}) EXPECT_EQ(StatusOf(rsps, id), BLKIF_RSP_OKAY) << id;
  EXPECT_EQ(image_.Read(200 * 512, kPageSize), std::vector<uint8_t>(kPageSize, 0xab));

  ASSERT_TRUE(backend_->features().discard);
  front.Put(Discard<abi64::DiscardRequest>(4, 200, 8));
  rsps = Run(front, 1);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  EXPECT_EQ(image_.Read(200 * 512, kPageSize), std::vector<uint8_t>(kPageSize, 0));
  front.Put(Rw<abi64::Request>(BLKIF_OP_READ, 5, 200, {{r, 0, 7}}));
  rsps = Run(front, 1);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  EXPECT_EQ(std::memcmp(Data(1), std::vector<uint8_t>(kPageSize, 0).data(), kPageSize), 0);
  EXPECT_EQ(backend_->Stats().flushes, 2u);
  EXPECT_EQ(backend_->Stats().discards, 1u);
}

// 600 one-sector segments over two indirect pages; write them, read them back.
template <class Layout>
void IndirectRoundTrip(BlkifTest& t, FakeGrants& grants, SyntheticFrontend& front,
                       std::function<std::vector<Response>(size_t)> run, const ImageFile& image) {
  (void)t;
  constexpr uint16_t kSegs = 600;
  // Indirect pages at 500, 501 (read-only grants); segment i is sector i / 300 of page 600 + i %
  // 300.
  const GrantRef ind0 = grants.Grant(500, true), ind1 = grants.Grant(501, true);
  std::vector<GrantRef> data;
  for (uint32_t i = 0; i < kSegs; ++i) {
    data.push_back(grants.Grant(600 + i % 300));
    std::memset(grants.Page(600 + i % 300) + i / 300 * 512, uint8_t(i + 1), 512);
  }
  auto fill = [&] {
    for (uint32_t i = 0; i < kSegs; ++i) {
      blkif_request_segment seg{data[i], uint8_t(i / 300), uint8_t(i / 300)};
      std::memcpy(grants.Page(500 + i / 512) + (i % 512) * sizeof(seg), &seg, sizeof(seg));
    }
  };
  fill();
  front.Put(
      Indirect<typename Layout::IndirectRequest>(BLKIF_OP_WRITE, 1, 1000, kSegs, {ind0, ind1}));
  auto rsps = run(1);
  ASSERT_EQ(rsps.size(), 1u);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  const auto file = image.Read(1000 * 512, kSegs * 512);
  for (uint32_t i = 0; i < kSegs; ++i) ASSERT_EQ(file[i * 512 + 7], uint8_t(i + 1)) << i;
  for (uint32_t i = 0; i < 300; ++i) std::memset(grants.Page(600 + i), 0, 1024);
  front.Put(
      Indirect<typename Layout::IndirectRequest>(BLKIF_OP_READ, 2, 1000, kSegs, {ind0, ind1}));
  rsps = run(1);
  ASSERT_EQ(rsps.size(), 1u);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  for (uint32_t i = 0; i < kSegs; ++i)
    ASSERT_EQ(grants.Page(600 + i % 300)[i / 300 * 512 + 100], uint8_t(i + 1)) << i;
}

struct Layout64 {
  using Request = abi64::Request;
  using IndirectRequest = abi64::IndirectRequest;
  using DiscardRequest = abi64::DiscardRequest;
};
struct Layout32 {
  using Request = abi32::Request;
  using IndirectRequest = abi32::IndirectRequest;
  using DiscardRequest = abi32::DiscardRequest;
};

TEST_F(BlkifTest, IndirectRequests64) {
  Open();
  Connect(Abi::k64, 0, 1);
  IndirectRoundTrip<Layout64>(
      *this, grants_, *fronts_[0], [&](size_t n) { return Run(*fronts_[0], n); }, image_);
}

TEST_F(BlkifTest, Layout32ReadWriteIndirectDiscard) {
  Open();
  Connect(Abi::k32, 0, 1);
  auto& front = *fronts_[0];
  const GrantRef a = DataPage(0);
  front.Put(Rw<abi32::Request>(BLKIF_OP_READ, 0x1122334455667788ull, 40, {{a, 1, 6}}));
  auto rsps = Run(front, 1);
  EXPECT_EQ(rsps[0].id, 0x1122334455667788ull);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  for (size_t i = 0; i < 6 * 512; ++i) ASSERT_EQ(Data(0)[512 + i], Expected(40 * 512 + i));
  front.Put(Discard<abi32::DiscardRequest>(9, 8, 8));
  rsps = Run(front, 1);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  EXPECT_EQ(image_.Read(8 * 512, 4096), std::vector<uint8_t>(4096, 0));
  IndirectRoundTrip<Layout32>(
      *this, grants_, front, [&](size_t n) { return Run(front, n); }, image_);
}

TEST_F(BlkifTest, MultiPageRingTakesMoreThanOnePageOfRequests) {
  Open();
  Connect(Abi::k64, 2, 1);
  auto& front = *fronts_[0];
  ASSERT_EQ(front.size(), 128u);
  const uint32_t kCount = 120;  // more than a one-page ring (32) holds
  for (uint32_t i = 0; i < kCount; ++i) {
    const GrantRef g = DataPage(i);
    front.Put(Rw<abi64::Request>(BLKIF_OP_READ, i, i * 8, {{g, 0, 7}}));
  }
  auto rsps = Run(front, kCount);
  for (uint32_t i = 0; i < kCount; ++i) {
    EXPECT_EQ(StatusOf(rsps, i), BLKIF_RSP_OKAY);
    ASSERT_EQ(Data(i)[4095], Expected(uint64_t(i) * 4096 + 4095)) << i;
  }
  // Wrap around the ring several times.
  for (uint32_t round = 0; round < 3; ++round) {
    for (uint32_t i = 0; i < 100; ++i)
      front.Put(Rw<abi64::Request>(BLKIF_OP_READ, i, 0, {{DataPage(i), 0, 0}}));
    EXPECT_EQ(Run(front, 100).size(), 100u);
  }
}

TEST_F(BlkifTest, TwoQueuesInParallel) {
  Open();
  Connect(Abi::k64, 0, 2);
  for (uint32_t q = 0; q < 2; ++q)
    for (uint32_t i = 0; i < 30; ++i)
      fronts_[q]->Put(
          Rw<abi64::Request>(BLKIF_OP_READ, i, (q * 30 + i) * 8, {{DataPage(q * 30 + i), 0, 7}}));
  Send(*fronts_[0], 0);
  Send(*fronts_[1], 1);
  for (uint32_t q = 0; q < 2; ++q) {
    std::vector<Response> rsps;
    fronts_[q]->WaitFor(rsps, 30);
    ASSERT_EQ(rsps.size(), 30u);
    for (const auto& r : rsps) EXPECT_EQ(r.status, BLKIF_RSP_OKAY);
  }
  for (uint32_t n = 0; n < 60; ++n) ASSERT_EQ(Data(n)[17], Expected(uint64_t(n) * 4096 + 17));
  EXPECT_EQ(backend_->Stats().reads, 60u);
}

// Discard is offered only where the image's file system punches holes; asking it (one past
// the end) changes neither the size nor the data. Read-only images never offer it.
TEST(BlkifDisk, HolePunchingProbeLeavesTheImageAlone) {
  ImageFile image;
  auto rw = Disk::Open(image.path(), /*read_only=*/false);
  ASSERT_TRUE(rw);
  struct stat st {};
  ASSERT_EQ(stat(image.path().c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), kImageBytes);
  const auto tail = image.Read(kImageBytes - kPageSize, kPageSize);
  for (size_t i = 0; i < tail.size(); ++i)
    ASSERT_EQ(tail[i], Expected(kImageBytes - kPageSize + i)) << i;
  auto ro = Disk::Open(image.path(), /*read_only=*/true);
  ASSERT_TRUE(ro);
  EXPECT_FALSE(ro->punch_hole);
  auto backend = BlkifBackend::Open(DiskOptions{.path = image.path()});
  ASSERT_TRUE(backend);
  EXPECT_EQ((*backend)->features().discard, rw->punch_hole);
}

TEST_F(BlkifTest, ReadOnlyDiskRefusesWritesFlushAndDiscard) {
  Open(/*read_only=*/true);
  Connect(Abi::k64, 0, 1);
  auto& front = *fronts_[0];
  const auto keys = backend_->Keys();
  EXPECT_NE(std::find(keys.begin(), keys.end(), std::pair<std::string, std::string>("mode", "r")),
            keys.end());
  const GrantRef g = DataPage(0);
  std::memset(Data(0), 0xee, kPageSize);
  front.Put(Rw<abi64::Request>(BLKIF_OP_WRITE, 1, 0, {{g, 0, 7}}));
  front.Put(Rw<abi64::Request>(BLKIF_OP_FLUSH_DISKCACHE, 2, 0, {}));
  front.Put(Discard<abi64::DiscardRequest>(3, 0, 8));
  front.Put(Rw<abi64::Request>(BLKIF_OP_READ, 5, 0, {{g, 0, 7}}));
  auto rsps = Run(front, 4);
  EXPECT_EQ(StatusOf(rsps, 1), BLKIF_RSP_ERROR);
  EXPECT_EQ(StatusOf(rsps, 2), BLKIF_RSP_ERROR);
  EXPECT_EQ(StatusOf(rsps, 3), BLKIF_RSP_EOPNOTSUPP);  // discard is not advertised read-only
  EXPECT_EQ(StatusOf(rsps, 5), BLKIF_RSP_OKAY);
  EXPECT_EQ(image_.Read(0, 8)[0], Expected(0));
  EXPECT_EQ(Data(0)[100], Expected(100));
}

TEST_F(BlkifTest, HostileRequestsGetErrorsWhileGoodOnesWork) {
  Open();
  Connect(Abi::k64, 0, 1);
  auto& front = *fronts_[0];
  const GrantRef good = DataPage(0), ro = DataPage(1, /*read_only=*/true), revoked = DataPage(2);
  grants_.Revoke(revoked);
  const uint64_t last = kImageBytes / 512 - 1;
  struct Case {
    abi64::Request req;
    int16_t status;
  };
  const Case cases[] = {
      {Rw<abi64::Request>(BLKIF_OP_READ, 10, 0, {{9999, 0, 7}}), BLKIF_RSP_ERROR},  // unknown ref
      {Rw<abi64::Request>(BLKIF_OP_READ, 11, 0, {{revoked, 0, 7}}), BLKIF_RSP_ERROR},  // revoked
      {Rw<abi64::Request>(BLKIF_OP_READ, 12, 0, {{ro, 0, 7}}),
       BLKIF_RSP_ERROR},  // RO page as target
      {Rw<abi64::Request>(BLKIF_OP_READ, 13, last, {{good, 0, 1}}),
       BLKIF_RSP_ERROR},  // past the end
      {Rw<abi64::Request>(BLKIF_OP_READ, 14, UINT64_MAX - 3, {{good, 0, 7}}), BLKIF_RSP_ERROR},
      {Rw<abi64::Request>(BLKIF_OP_READ, 15, 0, {}), BLKIF_RSP_ERROR},              // no segments
      {Rw<abi64::Request>(BLKIF_OP_READ, 16, 0, {{good, 3, 2}}), BLKIF_RSP_ERROR},  // last < first
      {Rw<abi64::Request>(BLKIF_OP_READ, 17, 0, {{good, 0, 8}}),
       BLKIF_RSP_ERROR},  // beyond the page
      {Rw<abi64::Request>(BLKIF_OP_READ, 18, 0, {{good, 0, 7}, {9999, 0, 7}}), BLKIF_RSP_ERROR},
      {Rw<abi64::Request>(77, 19, 0, {{good, 0, 7}}), BLKIF_RSP_EOPNOTSUPP},  // unknown operation
      {Rw<abi64::Request>(BLKIF_OP_READ, 20, last, {{good, 7, 7}}), BLKIF_RSP_OKAY},  // last sector
  };
  for (const Case& c : cases) front.Put(c.req);
  auto too_many = Rw<abi64::Request>(BLKIF_OP_READ, 21, 0, {{good, 0, 7}});
  too_many.nr_segments = 12;
  front.Put(too_many);
  // Indirect: too many segments, a bad indirect page, a bad segment inside a good page.
  front.Put(Indirect<abi64::IndirectRequest>(BLKIF_OP_READ, 22, 0, 1025, {good}));
  front.Put(Indirect<abi64::IndirectRequest>(BLKIF_OP_READ, 23, 0, 4, {9999}));
  const GrantRef ind = DataPage(3, true);
  blkif_request_segment bad_seg{good, 5, 9};
  std::memcpy(Data(3), &bad_seg, sizeof(bad_seg));
  front.Put(Indirect<abi64::IndirectRequest>(BLKIF_OP_READ, 24, 0, 1, {ind}));
  front.Put(Indirect<abi64::IndirectRequest>(BLKIF_OP_FLUSH_DISKCACHE, 25, 0, 1, {ind}));
  front.Put(Discard<abi64::DiscardRequest>(26, last, 2));
  front.Put(Discard<abi64::DiscardRequest>(27, 1, UINT64_MAX / 2));
  front.Put(Rw<abi64::Request>(BLKIF_OP_READ, 28, 8, {{good, 0, 7}}));  // still works
  auto rsps = Run(front, std::size(cases) + 8);
  for (const Case& c : cases) EXPECT_EQ(StatusOf(rsps, c.req.id), c.status) << c.req.id;
  for (uint64_t id = 21; id <= 27; ++id) EXPECT_EQ(StatusOf(rsps, id), BLKIF_RSP_ERROR) << id;
  EXPECT_EQ(StatusOf(rsps, 28), BLKIF_RSP_OKAY);
  EXPECT_EQ(Data(0)[5], Expected(8 * 512 + 5));
  EXPECT_EQ(backend_->Stats().errors, std::size(cases) - 1 + 7);
}

TEST_F(BlkifTest, WildRequestProducerStopsThatRingOnly) {
  Open();
  Connect(Abi::k64, 0, 2);
  auto& bad = *fronts_[0];
  bad.Put(Rw<abi64::Request>(BLKIF_OP_READ, 1, 0, {{DataPage(0), 0, 7}}));
  bad.Push();
  bad.SetReqProd(1000);  // 1000 requests "published" on a 32-entry ring
  backend_->QueueEndpoint(0)->OnGuestSend(10);
  backend_->QueueEndpoint(0)->OnGuestSend(10);
  // The other queue is unaffected.
  fronts_[1]->Put(Rw<abi64::Request>(BLKIF_OP_READ, 2, 0, {{DataPage(1), 0, 7}}));
  auto rsps = Run(*fronts_[1], 1, 1);
  EXPECT_EQ(rsps[0].status, BLKIF_RSP_OKAY);
  // Quiesce returns only when queue 0's thread has looked at its ring and answered nothing.
  backend_->Quiesce();
  std::vector<Response> none;
  bad.Collect(none);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(backend_->Stats().requests, 1u);
  backend_->Resume();
}

TEST_F(BlkifTest, QuiesceDrainsInFlightAndHoldsNewRequests) {
  Open();
  Connect(Abi::k64, 0, 1);
  auto& front = *fronts_[0];
  for (uint32_t i = 0; i < 28; ++i)
    front.Put(Rw<abi64::Request>(BLKIF_OP_WRITE, i, i * 8, {{DataPage(i), 0, 7}}));
  Send(front);
  backend_->Quiesce();
  // Every request taken before the quiesce completed; whatever was answered is on the ring.
  const uint64_t answered = backend_->Stats().requests;
  std::vector<Response> rsps;
  front.Collect(rsps);
  EXPECT_EQ(rsps.size(), answered);
  EXPECT_EQ(grants_.active_mappings(), 1) << "only the ring page stays mapped";
  // New requests wait for Resume (4 more: the ring holds 32 unanswered).
  for (uint32_t i = 0; i < 4; ++i)
    front.Put(Rw<abi64::Request>(BLKIF_OP_READ, 100 + i, 0, {{DataPage(40 + i), 0, 7}}));
  Send(front);
  backend_->Resume();
  front.WaitFor(rsps, 32);
  EXPECT_EQ(rsps.size(), 32u);
}

TEST_F(BlkifTest, ReconnectAfterDisconnect) {
  Open();
  Connect(Abi::k64, 0, 1);
  fronts_[0]->Put(Rw<abi64::Request>(BLKIF_OP_READ, 1, 0, {{DataPage(0), 0, 7}}));
  EXPECT_EQ(Run(*fronts_[0], 1)[0].status, BLKIF_RSP_OKAY);
  backend_->Disconnect();
  EXPECT_EQ(grants_.active_mappings(), 0);
  fronts_.clear();
  Connect(Abi::k32, 1, 1);
  fronts_[0]->Put(Rw<abi32::Request>(BLKIF_OP_READ, 2, 8, {{DataPage(1), 0, 7}}));
  EXPECT_EQ(Run(*fronts_[0], 1)[0].status, BLKIF_RSP_OKAY);
  EXPECT_EQ(Data(1)[9], Expected(8 * 512 + 9));
}

}  // namespace
}  // namespace xenkvm::blkif
