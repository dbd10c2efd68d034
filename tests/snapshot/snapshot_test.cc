// The snapshot file and codec: round trips, and the loader against truncated, bit-flipped,
// wrong-version, foreign-host and reordered files (each refused with its own line).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "snapshot/codec.h"
#include "snapshot/format.h"

namespace xenkvm::snapshot {
namespace {

std::span<const std::byte> AsBytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::vector<std::byte> TwoSectionFile(const HostFacts& facts) {
  VectorSink sink;
  Writer w(sink, facts);
  EXPECT_TRUE(w.Begin());
  EXPECT_TRUE(w.Section(MakeTag("AAAA"), AsBytes("first section")));
  EXPECT_TRUE(w.BeginSection(MakeTag("RAM "), 10));
  EXPECT_TRUE(w.Append(AsBytes("01234")));
  EXPECT_TRUE(w.Append(AsBytes("56789")));
  EXPECT_TRUE(w.EndSection());
  EXPECT_TRUE(w.Finish());
  return sink.bytes();
}

std::string Error(const std::vector<std::byte>& file, const HostFacts& here) {
  SpanSource source(file);
  auto r = Reader::Open(source, here);
  return r ? "" : Describe(r.error());
}

TEST(SnapshotCodec, RoundTripsEveryKind) {
  Encoder e;
  e.U8(0xab);
  e.Bool(true);
  e.U16(0xbeef);
  e.U32(0xdeadbeef);
  e.U64(0x0123456789abcdefULL);
  e.String("xenstore");
  Decoder d(e.bytes());
  EXPECT_EQ(d.U8(), 0xab);
  EXPECT_TRUE(d.Bool());
  EXPECT_EQ(d.U16(), 0xbeef);
  EXPECT_EQ(d.U32(), 0xdeadbeefu);
  EXPECT_EQ(d.U64(), 0x0123456789abcdefULL);
  EXPECT_EQ(d.String(64), "xenstore");
  EXPECT_TRUE(d.Finish());
}

TEST(SnapshotCodec, ErrorsAreStickyAndBounded) {
  Encoder e;
  e.U32(1000000);  // a count no buffer of this size can hold
  e.U8(2);         // not a boolean
  {
    Decoder d(e.bytes());
    EXPECT_EQ(d.Count(UINT32_MAX, 4), 0u);
    EXPECT_FALSE(d.ok());
    EXPECT_EQ(d.U64(), 0u);  // sticky: reads nothing more
    EXPECT_EQ(Describe(d.Finish().error()), "snapshot holds an impossible count");
  }
  {
    Decoder d(e.bytes());
    (void)d.U32();
    EXPECT_FALSE(d.Bool());
    EXPECT_FALSE(d.Finish());
  }
  {
    Decoder d(e.bytes());
    EXPECT_EQ(d.String(10), "");  // length 1000000 > 10
    EXPECT_FALSE(d.ok());
  }
  {
    Decoder d(e.bytes());
    (void)d.U32();
    EXPECT_EQ(Describe(d.Finish().error()), "snapshot section has trailing bytes");
  }
}

TEST(SnapshotFile, RoundTripsSections) {
  const HostFacts facts = CurrentHostFacts();
  const std::vector<std::byte> file = TwoSectionFile(facts);
  SpanSource source(file);
  auto reader = Reader::Open(source, facts);
  ASSERT_TRUE(reader) << Describe(reader.error());
  EXPECT_EQ(reader->facts(), facts);
  ASSERT_EQ(reader->sections().size(), 2u);
  auto first = reader->Load(*reader->Only(MakeTag("AAAA")));
  ASSERT_TRUE(first);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(first->data()), first->size()),
            "first section");
  std::array<std::byte, 4> part{};
  ASSERT_TRUE(reader->ReadPart(*reader->Only(MakeTag("RAM ")), 3, part));
  EXPECT_EQ(std::memcmp(part.data(), "3456", 4), 0);
  EXPECT_FALSE(reader->ReadPart(*reader->Only(MakeTag("RAM ")), 8, part));
  EXPECT_FALSE(reader->Only(MakeTag("NONE")));
}

TEST(SnapshotFile, RefusesEveryTruncation) {
  const HostFacts facts = CurrentHostFacts();
  const std::vector<std::byte> file = TwoSectionFile(facts);
  for (size_t len = 0; len < file.size(); ++len) {
    std::vector<std::byte> cut(file.begin(), file.begin() + len);
    const std::string error = Error(cut, facts);
    EXPECT_FALSE(error.empty()) << "accepted a file cut at " << len;
  }
  EXPECT_EQ(Error(std::vector<std::byte>(file.begin(), file.end() - 1), facts),
            "snapshot file is truncated");
}

TEST(SnapshotFile, RefusesEveryBitFlip) {
  const HostFacts facts = CurrentHostFacts();
  const std::vector<std::byte> file = TwoSectionFile(facts);
  for (size_t i = 0; i < file.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<std::byte> flipped = file;
      flipped[i] ^= std::byte(1 << bit);
      EXPECT_FALSE(Error(flipped, facts).empty()) << "accepted a flip at " << i << "." << bit;
    }
  }
}

TEST(SnapshotFile, RefusesAnotherVersionWithItsOwnLine) {
  const HostFacts facts = CurrentHostFacts();
  std::vector<std::byte> file = TwoSectionFile(facts);
  file[8] = std::byte(kFormatVersion + 1);  // the version field, checked before the checksum
  EXPECT_EQ(Error(file, facts),
            "snapshot file has another format version (written by another xenkvm)");
  file[0] = std::byte{'Y'};
  EXPECT_EQ(Error(file, facts), "not a xenkvm snapshot file (bad magic)");
}

TEST(SnapshotFile, RefusesAForeignHost) {
  HostFacts saved = CurrentHostFacts();
  HostFacts here = saved;
  here.cpu_vendor[0] ^= 1;
  EXPECT_EQ(Error(TwoSectionFile(saved), here),
            "snapshot was taken on a host with another CPU vendor");
  here = saved;
  here.xsave_features = saved.xsave_features >> 1;
  saved.xsave_features |= 1;
  EXPECT_EQ(Error(TwoSectionFile(saved), here),
            "snapshot was taken on a host with XSAVE features this host lacks");
  here = saved;
  saved.xsave_features = 0;  // fewer features than this host has: fine
  EXPECT_EQ(Error(TwoSectionFile(saved), here), "");
}

TEST(SnapshotFile, RefusesBytesAfterTheEndAndAMissingEnd) {
  const HostFacts facts = CurrentHostFacts();
  std::vector<std::byte> file = TwoSectionFile(facts);
  file.push_back(std::byte{0});
  EXPECT_EQ(Error(file, facts), "snapshot file has bytes after its END section");

  VectorSink sink;
  Writer w(sink, facts);
  ASSERT_TRUE(w.Begin());
  ASSERT_TRUE(w.Section(MakeTag("AAAA"), AsBytes("x")));
  EXPECT_EQ(Error(sink.bytes(), facts), "snapshot file is truncated");
}

TEST(SnapshotFile, WriterKeepsSectionsWhole) {
  VectorSink sink;
  Writer w(sink, CurrentHostFacts());
  ASSERT_TRUE(w.Begin());
  ASSERT_TRUE(w.BeginSection(MakeTag("RAM "), 4));
  EXPECT_FALSE(w.Append(AsBytes("12345")));  // longer than announced
  EXPECT_FALSE(w.EndSection());              // shorter than announced
  EXPECT_FALSE(w.Section(MakeTag("AAAA"), {}));
}

}  // namespace
}  // namespace xenkvm::snapshot
