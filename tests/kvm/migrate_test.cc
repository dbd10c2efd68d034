// Live migration end to end (docs/migration.md): the IPI storm migrated mid-run from one
// `xenkvm run` to a `xenkvm restore --incoming` on this machine finishes there with its exact
// counts (the guest's own PASS); destinations that refuse the connection, die mid-stream or
// reject the state leave the source running to its PASS. A SIGKILL watchdog ends hung VMMs.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <thread>

#include "control/protocol.h"
#include "control/server.h"
#include "kvm/system.h"
#include "snapshot/endpoint.h"
#include "tests/kvm/disk_image.h"
#include "tests/kvm/vmm_process.h"

namespace {

using namespace xenkvm::testing;

Json Migrate(const std::string& sock, const std::string& uri) {
  return Request(sock, "migrate", {uri});
}

// The storm held (guests/runtime/xs.h) until the test releases it wherever it runs by then: it
// cannot finish before the migration, however fast the host.
std::vector<std::string> Source(const std::string& sock) {
  return {XENKVM_BINARY,
          "run",
          "--vcpus",
          "4",
          "--timeout",
          "150",
          "--control",
          sock,
          "--cmdline",
          "hold=1",
          std::string(XENKVM_GUESTS_DIR) + "/ipi_storm.elf"};
}

TEST(Migration, IpiStormMigratedMidRunFinishesOnTheDestination) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string sock = dir.path + "/ctl", in = dir.path + "/in";
  const std::string dest_sock = dir.path + "/ctl-dest";
  Vmm source(Source(sock));
  Vmm dest({XENKVM_BINARY, "restore", "--incoming", "unix:" + in, "--quiet", "--timeout", "150",
            "--control", dest_sock});
  ASSERT_TRUE(WaitForPath(in, 30s)) << dest.output();
  ASSERT_TRUE(source.WaitForOutput("stage 11\n", 60s)) << source.output();
  const Json reply = Migrate(sock, "unix:" + in);
  ASSERT_TRUE(reply.is_object() && reply.value("ok", false)) << reply << "\n"
                                                             << source.output() << "\n"
                                                             << dest.output();
  EXPECT_GE(reply["rounds"].get<uint32_t>(), 1u);
  EXPECT_GT(reply["pages_sent"].get<uint64_t>(), 0u);
  EXPECT_GE(reply["total_ms"].get<double>(), reply["downtime_ms"].get<double>());
  EXPECT_EQ(source.Wait(30s), 0) << source.output();
  EXPECT_NE(source.output().find("xenkvm: migrated to unix:" + in), std::string::npos)
      << source.output();
  EXPECT_EQ(source.output().find("xenkvm-test: PASS"), std::string::npos)
      << "the guest finished before it was migrated: not a live migration\n"
      << source.output();
  EXPECT_TRUE(Ok(Release(dest_sock))) << dest.output();
  EXPECT_EQ(dest.Wait(150s), 0) << dest.output();
  EXPECT_NE(dest.output().find("xenkvm-test: PASS ipi_storm"), std::string::npos) << dest.output();
  std::printf("migration: downtime %.1f ms, total %.1f ms, %u rounds, %llu + %llu pages\n",
              reply["downtime_ms"].get<double>(), reply["total_ms"].get<double>(),
              reply["rounds"].get<uint32_t>(),
              static_cast<unsigned long long>(reply["pages_sent"].get<uint64_t>()),
              static_cast<unsigned long long>(reply["final_pages"].get<uint64_t>()));
}

// Our blkfront guest migrated while it does I/O (held reading at stage 11), both sides on the same
// images: the disks are quiesced at the stop, their rings (mapped by the backend long before
// the migration) travel in the final copy with the backends' state, and the guest finishes
// every scenario on the destination with what it wrote where it said.
TEST(Migration, BlkfrontMigratedMidIoFinishesWithItsDataVerified) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  DiskImage rw(8192, 0xa1), ro(2048, 0xb2);
  ASSERT_TRUE(rw.ok() && ro.ok());
  const std::string sock = dir.path + "/ctl", in = dir.path + "/in";
  const std::string dest_sock = dir.path + "/ctl-dest";
  Vmm source({XENKVM_BINARY, "run", "--timeout", "150", "--control", sock, "--disk", rw.path(),
              "--disk", ro.path() + ",ro", "--cmdline", "hold=1",
              XENKVM_GUESTS_DIR "/blkfront.elf"});
  Vmm dest({XENKVM_BINARY, "restore", "--incoming", "unix:" + in, "--quiet", "--timeout", "150",
            "--disk", rw.path(), "--disk", ro.path() + ",ro", "--control", dest_sock});
  ASSERT_TRUE(WaitForPath(in, 30s)) << dest.output();
  ASSERT_TRUE(source.WaitForOutput("stage 11\n", 60s)) << source.output();
  const Json reply = Migrate(sock, "unix:" + in);
  ASSERT_TRUE(reply.is_object() && reply.value("ok", false)) << reply << "\n"
                                                             << source.output() << "\n"
                                                             << dest.output();
  EXPECT_EQ(source.Wait(30s), 0) << source.output();
  EXPECT_EQ(source.output().find("xenkvm-test: PASS"), std::string::npos)
      << "the guest finished before it was migrated\n"
      << source.output();
  EXPECT_TRUE(Ok(Release(dest_sock))) << dest.output();
  EXPECT_EQ(dest.Wait(150s), 0) << dest.output();
  const std::string out = source.output() + dest.output();
  for (const char* scenario : kBlkfrontScenarios)
    EXPECT_NE(out.find(std::string("blkfront: PASS ") + scenario), std::string::npos) << scenario;
  EXPECT_NE(dest.output().find("xenkvm-test: PASS blkfront"), std::string::npos) << out;
  ExpectBlkfrontWrites(rw, ro);
}

// exec:COMMAND with the destination on the command's stdin and stdout (as ssh would carry it):
// its output reaches the source's stderr. The source stops its guest once migrated, so the one
// PASS there is the destination's (two would be a guest run on both sides).
TEST(Migration, ExecTunnelToAStdioDestination) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string sock = dir.path + "/ctl", dest_sock = dir.path + "/ctl-dest";
  Vmm source(Source(sock));
  ASSERT_TRUE(source.WaitForOutput("stage 11\n", 60s)) << source.output();
  const std::string uri = std::string("exec:") + XENKVM_BINARY +
                          " restore --incoming - --quiet --timeout 150 --control " + dest_sock;
  const Json reply = Migrate(sock, uri);
  ASSERT_TRUE(reply.is_object() && reply.value("ok", false)) << reply << "\n" << source.output();
  EXPECT_TRUE(Ok(Release(dest_sock))) << source.output();
  EXPECT_EQ(source.Wait(150s), 0) << source.output();  // and its output ends with the command's
  const std::string out = source.output();
  EXPECT_NE(out.find("xenkvm: migrated to exec:"), std::string::npos) << out;
  const size_t pass = out.find("xenkvm-test: PASS ipi_storm");
  ASSERT_NE(pass, std::string::npos) << out;
  EXPECT_EQ(out.find("xenkvm-test: PASS", pass + 1), std::string::npos) << out;
}

// A destination played by the test: takes the connection and reads frames until `until` (or
// the end), then either closes (a destination that died) or answers FAIL.
void FakeDestination(xenkvm::snapshot::StreamListener& listener, uint32_t until, bool answer) {
  auto channel = listener.Accept(60s);
  if (!channel) return;
  for (;;) {
    auto frame = channel->Receive(uint64_t{4} << 30, 60s);
    if (!frame || frame->tag == until) break;
  }
  if (answer) {
    const std::string line = "rejected by the test";
    (void)channel->Send(xenkvm::snapshot::kFailFrame, std::as_bytes(std::span(line)));
  }
}

TEST(Migration, FailedDestinationsLeaveTheSourceRunning) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string sock = dir.path + "/ctl";
  Vmm source(Source(sock));
  ASSERT_TRUE(source.WaitForOutput("stage 11\n", 60s)) << source.output();

  // Nobody listens.
  Json reply = Migrate(sock, "unix:" + dir.path + "/nobody");
  ASSERT_TRUE(reply.is_object()) << reply;
  EXPECT_EQ(reply["ok"], false);
  EXPECT_NE(reply.value("error", "").find("connect to the migration destination"),
            std::string::npos)
      << reply;
  EXPECT_NE(reply.value("error", "").find("the guest runs on here"), std::string::npos) << reply;

  // The operator pauses the guest for the next two tries, which pause (counted) and resume it
  // themselves; the operator's pause must be all that is left.
  ASSERT_EQ(Request(sock, "pause").value("ok", false), true);
  ASSERT_EQ(source.output().find("xenkvm-test: PASS"), std::string::npos)
      << "the guest finished before the migrations were tried\n"
      << source.output();
  auto pause_count = [&sock] { return Request(sock, "status").value("pause_count", 0u); };

  // The destination dies after the first frame.
  {
    auto listener = xenkvm::snapshot::StreamListener::Listen("unix:" + dir.path + "/dies");
    ASSERT_TRUE(listener);
    std::thread fake(
        [&] { FakeDestination(*listener, xenkvm::snapshot::kHelloFrame, /*answer=*/false); });
    reply = Migrate(sock, "unix:" + dir.path + "/dies");
    fake.join();
    EXPECT_EQ(reply["ok"], false) << reply;
    EXPECT_EQ(reply.value("paused", true), false) << reply;
    EXPECT_EQ(pause_count(), 1u);
  }
  // The destination takes everything, then rejects the state.
  {
    auto listener = xenkvm::snapshot::StreamListener::Listen("unix:" + dir.path + "/rejects");
    ASSERT_TRUE(listener);
    std::thread fake(
        [&] { FakeDestination(*listener, xenkvm::snapshot::kStateFrame, /*answer=*/true); });
    reply = Migrate(sock, "unix:" + dir.path + "/rejects");
    fake.join();
    EXPECT_EQ(reply["ok"], false) << reply;
    EXPECT_NE(reply.value("error", "").find("rejected by the test"), std::string::npos) << reply;
    EXPECT_EQ(pause_count(), 1u);
  }
  ASSERT_EQ(Request(sock, "resume").value("ok", false), true);
  EXPECT_TRUE(Ok(Release(sock))) << source.output();
  EXPECT_EQ(source.Wait(150s), 0) << source.output();
  EXPECT_NE(source.output().find("xenkvm-test: PASS ipi_storm"), std::string::npos)
      << source.output();
}

// A hostile stream: the destination says why in one line and exits with 2.
TEST(Migration, DestinationRefusesAHostileStream) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string in = dir.path + "/in";
  Vmm dest({XENKVM_BINARY, "restore", "--incoming", "unix:" + in, "--quiet", "--timeout", "60"});
  ASSERT_TRUE(WaitForPath(in, 30s)) << dest.output();
  auto channel = xenkvm::snapshot::ConnectStream("unix:" + in);
  ASSERT_TRUE(channel);
  xenkvm::snapshot::Hello hello{xenkvm::snapshot::CurrentHostFacts(), 1, 16};
  ASSERT_TRUE(channel->Send(xenkvm::snapshot::kHelloFrame, xenkvm::snapshot::EncodeHello(hello)));
  xenkvm::snapshot::PageBatch batch;
  std::vector<std::byte> page(4096, std::byte{1});
  batch.Add(16 * 256, std::span<const std::byte, 4096>(page.data(), 4096));  // past 16 MiB
  ASSERT_TRUE(channel->Send(xenkvm::snapshot::kPagesFrame, batch.Encode()));
  auto answer = channel->Receive(4096, 60s);
  ASSERT_TRUE(answer) << dest.output();
  EXPECT_EQ(answer->tag, xenkvm::snapshot::kFailFrame);
  EXPECT_EQ(dest.Wait(60s), 2) << dest.output();
  EXPECT_NE(dest.output().find("xenkvm: migration: migration stream: a page outside RAM"),
            std::string::npos)
      << dest.output();
}

}  // namespace
