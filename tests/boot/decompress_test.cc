// boot/decompress: every format a bzImage's payload comes in round-trips a synthetic payload
// packed the way Linux's build packs it; corrupt, truncated, mis-sized and oversized payloads
// fail with one line naming the format, and nothing is allocated past the limits.
#include "boot/decompress.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/boot/codecs.h"

namespace xenkvm::boot {
namespace {

using test::ByteVec;
using test::kAllFormats;

constexpr size_t kPayloadSize = 700 * 1024;  // lzo: three blocks

class EachFormat : public ::testing::TestWithParam<Compression> {
 protected:
  static void SetUpTestSuite() { original_ = new ByteVec(test::SamplePayload(kPayloadSize)); }
  static void TearDownTestSuite() { delete original_; }
  static const ByteVec& Original() { return *original_; }
  ByteVec Packed() const { return test::Compress(GetParam(), Original()); }
  // The failure names the format.
  void ExpectFailure(const Result<Buffer>& r, const char* what) const {
    ASSERT_FALSE(r) << what;
    EXPECT_NE(std::string(r.error().message).find(CompressionName(GetParam())), std::string::npos)
        << what << ": " << r.error().message;
  }
  static ByteVec* original_;
};
ByteVec* EachFormat::original_ = nullptr;

TEST_P(EachFormat, RoundTrips) {
  const ByteVec packed = Packed();
  EXPECT_EQ(DetectCompression(packed), GetParam());
  auto out = DecompressKernelPayload(packed);
  ASSERT_TRUE(out) << out.error().message;
  ASSERT_EQ(out->size(), Original().size());
  EXPECT_EQ(0, std::memcmp(out->span().data(), Original().data(), Original().size()));
}

TEST_P(EachFormat, CorruptDataFails) {
  ByteVec packed = Packed();
  if (GetParam() == Compression::kLz4) {
    // lz4's legacy frame has no checksum (a damaged literal goes unnoticed, in Linux too):
    // its damaged structure is what fails. The first block's length beyond any block's.
    const uint32_t huge = 0x7fffffff;
    std::memcpy(packed.data() + 4, &huge, 4);
    ExpectFailure(DecompressKernelPayload(packed), "corrupt block length");
    return;
  }
  // A run of bytes in the middle of the stream overwritten: every other format checks its
  // data (gzip, bzip2, xz, lzo and zstd as their tools write them) or finds it damaged.
  const size_t mid = packed.size() / 2;
  for (size_t i = mid; i < mid + 16; ++i) packed[i] ^= 0x5a;
  ExpectFailure(DecompressKernelPayload(packed), "corrupt");
}

TEST_P(EachFormat, TruncatedFails) {
  const ByteVec packed = Packed();
  for (const size_t keep : {packed.size() / 2, packed.size() - 9, size_t{12}}) {
    // The stream cut short; Linux's size trailer (the last 4 bytes) kept as it was.
    ByteVec cut(packed.begin(), packed.begin() + static_cast<ptrdiff_t>(keep - 4));
    cut.insert(cut.end(), packed.end() - 4, packed.end());
    ExpectFailure(DecompressKernelPayload(cut), "truncated");
  }
}

TEST_P(EachFormat, SizeOtherThanDeclaredFails) {
  for (const int64_t delta : {-1, +1, -4096}) {
    ByteVec packed = Packed();
    uint32_t size;
    std::memcpy(&size, packed.data() + packed.size() - 4, 4);
    size = static_cast<uint32_t>(size + delta);
    std::memcpy(packed.data() + packed.size() - 4, &size, 4);
    ExpectFailure(DecompressKernelPayload(packed), "declared size off");
  }
}

TEST_P(EachFormat, DeclaredSizeOverTheLimitsIsRefusedBeforeDecoding) {
  const ByteVec packed = Packed();
  DecompressLimits tight;
  tight.max_output = kPayloadSize - 1;
  auto r = DecompressKernelPayload(packed, tight);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().xen_errno, XEN_E2BIG);
  // Over the ratio to the compressed size (a bomb): refused the same way.
  DecompressLimits ratio;
  ratio.min_allowance = 0;
  ratio.max_ratio = 1;
  r = DecompressKernelPayload(packed, ratio);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().xen_errno, XEN_E2BIG);
}

INSTANTIATE_TEST_SUITE_P(Formats, EachFormat, ::testing::ValuesIn(kAllFormats), test::FormatName);

TEST(Decompress, UnknownAndTinyPayloadsFail) {
  const ByteVec junk(64, 0x42);
  auto r = DecompressKernelPayload(junk);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().xen_errno, XEN_EINVAL);
  const ByteVec magic_only = {0x1f, 0x8b};
  EXPECT_FALSE(DecompressKernelPayload(magic_only));
  EXPECT_FALSE(DecompressKernelPayload({}));
  ByteVec zero_size = test::Zstd(test::SamplePayload(100));
  std::memset(zero_size.data() + zero_size.size() - 4, 0, 4);
  EXPECT_FALSE(DecompressKernelPayload(zero_size));
}

// A bomb: 64 MiB of zeros packs into a few KiB. The default limits refuse its declared size
// outright (ratio), and a bomb that lies about its size small overflows the buffer cleanly.
TEST(Decompress, BombsAreBounded) {
  const ByteVec zeros(64u << 20, 0);
  for (Compression c : {Compression::kXz, Compression::kZstd, Compression::kGzip}) {
    ByteVec packed = test::Compress(c, zeros);
    auto r = DecompressKernelPayload(packed);
    ASSERT_FALSE(r) << CompressionName(c);
    EXPECT_EQ(r.error().xen_errno, XEN_E2BIG) << CompressionName(c);
    const uint32_t small = 1u << 20;
    std::memcpy(packed.data() + packed.size() - 4, &small, 4);
    r = DecompressKernelPayload(packed);
    ASSERT_FALSE(r) << CompressionName(c);
    EXPECT_EQ(r.error().xen_errno, XEN_EINVAL) << CompressionName(c);
  }
}

// lz4 and lzo in several blocks smaller than Linux's, and lzo with stored blocks (data that
// does not compress): the block loops.
TEST(Decompress, BlockFormatsInManyBlocks) {
  ByteVec noise(300 * 1024);
  uint32_t x = 7;
  for (auto& b : noise) b = static_cast<uint8_t>((x = x * 1664525 + 1013904223) >> 24);
  const ByteVec text = test::SamplePayload(300 * 1024);
  for (const ByteVec* in : {static_cast<const ByteVec*>(&noise), &text}) {
    for (const ByteVec& packed : {test::Lz4(*in, 64 * 1024), test::Lzop(*in, 64 * 1024)}) {
      auto out = DecompressKernelPayload(packed);
      ASSERT_TRUE(out) << out.error().message;
      ASSERT_EQ(out->size(), in->size());
      EXPECT_EQ(0, std::memcmp(out->span().data(), in->data(), in->size()));
    }
  }
}

}  // namespace
}  // namespace xenkvm::boot
