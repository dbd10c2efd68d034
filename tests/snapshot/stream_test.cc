// The live-migration stream: frames round trip over a socket; every truncation, every bit flip,
// an over-long frame and a silent peer are refused with their own line; PAGE and HELO payloads
// against hostile contents; the unix: listener (owner-only, one connection) and exec:.
#include "snapshot/stream.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "snapshot/endpoint.h"

namespace xenkvm::snapshot {
namespace {

using namespace std::chrono_literals;
constexpr uint32_t kTag = MakeTag("TEST");

std::pair<Channel, Channel> Pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {Channel(fds[0], fds[0]), Channel(fds[1], fds[1])};
}

std::vector<std::byte> Bytes(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::byte(uint8_t(seed + i * 7));
  return v;
}

// One frame as it travels.
std::vector<std::byte> Wire(uint32_t tag, std::span<const std::byte> payload) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  {
    Channel out(fds[0], fds[0]);
    EXPECT_TRUE(out.Send(tag, payload));
  }
  std::vector<std::byte> wire(payload.size() + 64);
  const ssize_t n = ::read(fds[1], wire.data(), wire.size());
  ::close(fds[1]);
  wire.resize(size_t(std::max<ssize_t>(n, 0)));
  return wire;
}

// Receive on exactly these bytes, then the end of the stream: "" if a frame came out.
std::string ReceiveError(std::span<const std::byte> bytes, uint64_t max_length = 1 << 20) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  EXPECT_EQ(::write(fds[1], bytes.data(), bytes.size()), ssize_t(bytes.size()));
  ::close(fds[1]);
  Channel in(fds[0], fds[0]);
  auto frame = in.Receive(max_length, 5s);
  return frame ? "" : Describe(frame.error());
}

TEST(MigrationStream, FramesRoundTripBothWays) {
  auto pair = Pair();  // not a structured binding: the sender's lambda captures `a`
  Channel& a = pair.first;
  Channel& b = pair.second;
  const std::vector<std::byte> big = Bytes(3 << 20, 1);  // more than a socket buffer holds
  std::thread sender([&a, &big] {
    EXPECT_TRUE(a.Send(kTag, big));
    EXPECT_TRUE(a.Send(kGoFrame, {}));
  });
  auto first = b.Receive(4 << 20, 5s);
  ASSERT_TRUE(first) << Describe(first.error());
  EXPECT_EQ(first->tag, kTag);
  EXPECT_EQ(first->payload, big);
  auto second = b.Receive(0, 5s);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->tag, kGoFrame);
  EXPECT_TRUE(second->payload.empty());
  sender.join();
  ASSERT_TRUE(b.Send(kReadyFrame, Bytes(10, 9)));
  auto back = a.Receive(10, 5s);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->payload, Bytes(10, 9));
  EXPECT_EQ(a.bytes_sent(), b.bytes_received());
  EXPECT_EQ(b.bytes_sent(), a.bytes_received());
}

TEST(MigrationStream, EveryTruncationIsRefused) {
  const std::vector<std::byte> wire = Wire(kTag, Bytes(100, 3));
  ASSERT_EQ(wire.size(), 16u + 100 + 4);
  EXPECT_EQ(ReceiveError(wire), "");
  EXPECT_EQ(ReceiveError({}), "migration stream ended early (the other side closed it)");
  for (size_t n = 1; n < wire.size(); ++n)
    EXPECT_EQ(ReceiveError(std::span(wire).first(n)),
              "migration stream is truncated (it ends inside a frame)")
        << n << " bytes";
}

TEST(MigrationStream, EveryBitFlipIsRefused) {
  const std::vector<std::byte> wire = Wire(kTag, Bytes(40, 5));
  for (size_t i = 0; i < wire.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<std::byte> bad = wire;
      bad[i] ^= std::byte(1 << bit);
      const std::string error = ReceiveError(bad);
      EXPECT_NE(error, "") << "byte " << i << " bit " << bit;
      // The length field may now promise more than follows, or more than allowed.
      EXPECT_TRUE(error.find("checksum mismatch") != std::string::npos ||
                  error.find("truncated") != std::string::npos ||
                  error.find("longer than allowed") != std::string::npos ||
                  error.find("bad frame header") != std::string::npos)
          << error;
    }
  }
}

TEST(MigrationStream, OverLongFramesAndSilentPeersAreRefused) {
  const std::vector<std::byte> wire = Wire(kTag, Bytes(100, 3));
  EXPECT_EQ(ReceiveError(wire, 99), "migration stream has a frame longer than allowed");
  EXPECT_EQ(ReceiveError(wire, 100), "");
  auto [a, b] = Pair();
  auto nothing = b.Receive(100, 20ms);
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().host_errno, ETIMEDOUT);
}

// A peer that is gone is an error, not a SIGPIPE (which would end the VMM).
TEST(MigrationStream, SendingToAClosedPeerFails) {
  auto [a, b] = Pair();
  { Channel gone = std::move(b); }
  auto r = a.Send(kTag, Bytes(1 << 20, 0));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().host_errno, EPIPE);
}

TEST(MigrationPages, BatchesRoundTripWithZeroPagesAsFlags) {
  PageBatch batch;
  std::vector<std::byte> zero(4096), data = Bytes(4096, 11);
  batch.Add(7, std::span<const std::byte, 4096>(data.data(), 4096));
  batch.Add(2, std::span<const std::byte, 4096>(zero.data(), 4096));
  const std::vector<std::byte> payload = batch.Encode();
  EXPECT_EQ(payload.size(), 8u + 2 * 8 + 4096);  // the zero page costs its entry only
  std::vector<std::pair<uint64_t, std::vector<std::byte>>> got;
  ASSERT_TRUE(DecodePages(payload, 8, [&](uint64_t page, std::span<const std::byte> bytes) {
    got.emplace_back(page, std::vector<std::byte>(bytes.begin(), bytes.end()));
  }));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].first, 7u);
  EXPECT_EQ(got[0].second, data);
  EXPECT_EQ(got[1].first, 2u);
  EXPECT_TRUE(got[1].second.empty());
}

TEST(MigrationPages, HostileBatchesAreRefusedBeforeAnyPageIsApplied) {
  PageBatch batch;
  std::vector<std::byte> data = Bytes(4096, 1);
  batch.Add(1, std::span<const std::byte, 4096>(data.data(), 4096));
  batch.Add(5, std::span<const std::byte, 4096>(data.data(), 4096));
  const std::vector<std::byte> payload = batch.Encode();
  int applied = 0;
  auto count = [&applied](uint64_t, std::span<const std::byte>) { ++applied; };
  EXPECT_FALSE(DecodePages(payload, 5, count));  // page 5 is outside 5 pages of RAM
  for (size_t n = 0; n < payload.size(); n += 61)
    EXPECT_FALSE(DecodePages(std::span(payload).first(n), 8, count)) << n;
  std::vector<std::byte> longer = payload;
  longer.push_back(std::byte{0});
  EXPECT_FALSE(DecodePages(longer, 8, count));
  std::vector<std::byte> reserved = payload;
  reserved[4] = std::byte{1};
  EXPECT_FALSE(DecodePages(reserved, 8, count));
  Encoder huge;
  huge.U32(kMaxBatchPages + 1);
  huge.U32(0);
  EXPECT_FALSE(DecodePages(huge.bytes(), 8, count));
  EXPECT_EQ(applied, 0);
  EXPECT_TRUE(DecodePages(payload, 8, count));
  EXPECT_EQ(applied, 2);
}

TEST(MigrationHello, RoundTripsAndRefusesOtherStreams) {
  Hello hello{CurrentHostFacts(), 4, 512};
  std::vector<std::byte> bytes = EncodeHello(hello);
  auto back = DecodeHello(bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->facts, hello.facts);
  EXPECT_EQ(back->vcpus, 4u);
  EXPECT_EQ(back->memory_mib, 512u);
  for (size_t n = 0; n < bytes.size(); ++n) EXPECT_FALSE(DecodeHello(std::span(bytes).first(n)));
  std::vector<std::byte> version = bytes;
  version[8] = std::byte{99};
  EXPECT_EQ(Describe(DecodeHello(version).error()),
            "migration stream has another version (sent by another xenkvm)");
  std::vector<std::byte> magic = bytes;
  magic[0] = std::byte{'Y'};
  EXPECT_EQ(Describe(DecodeHello(magic).error()), "not a xenkvm migration stream");
}

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/xenkvm-stream-XXXXXX";
    path = ::mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() { (void)std::system(("rm -rf '" + path + "'").c_str()); }
  std::string path;
};

TEST(MigrationEndpoint, UnixListenerIsOwnerOnlyAndTakesOneConnection) {
  TempDir dir;
  const std::string uri = "unix:" + dir.path + "/in";
  auto listener = StreamListener::Listen(uri);
  ASSERT_TRUE(listener) << Describe(listener.error());
  struct stat st {};
  ASSERT_EQ(::lstat((dir.path + "/in").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(StreamListener::Listen(uri));  // the path exists
  auto source = ConnectStream(uri);
  ASSERT_TRUE(source) << Describe(source.error());
  auto dest = listener->Accept(5s);
  ASSERT_TRUE(dest) << Describe(dest.error());
  EXPECT_NE(::lstat((dir.path + "/in").c_str(), &st), 0);  // nobody else can connect
  ASSERT_TRUE(source->Send(kHelloFrame, Bytes(8, 0)));
  auto frame = dest->Receive(8, 5s);
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->tag, kHelloFrame);
  EXPECT_FALSE(ConnectStream(uri));
  EXPECT_EQ(Describe(ConnectStream("tcp:localhost:1").error()),
            "migration target must be unix:PATH or exec:COMMAND");
  EXPECT_FALSE(StreamListener::Listen("exec:cat"));
}

// exec:COMMAND gets the stream as its stdin and stdout: cat sends every frame back.
TEST(MigrationEndpoint, ExecRunsTheCommandOnTheStream) {
  auto channel = ConnectStream("exec:cat");
  ASSERT_TRUE(channel) << Describe(channel.error());
  ASSERT_TRUE(channel->Send(kPagesFrame, Bytes(5000, 2)));
  auto frame = channel->Receive(5000, 5s);
  ASSERT_TRUE(frame) << Describe(frame.error());
  EXPECT_EQ(frame->tag, kPagesFrame);
  EXPECT_EQ(frame->payload, Bytes(5000, 2));
  auto gone = ConnectStream("exec:exit 3");
  ASSERT_TRUE(gone);
  EXPECT_FALSE(gone->Receive(10, 5s));  // the command ended: the stream ended
}

}  // namespace
}  // namespace xenkvm::snapshot
