// Save and restore end to end (docs/snapshots.md): a guest saved mid-run through the control
// socket, its VMM killed, and the snapshot resumed by `xenkvm restore` in a new process finishes
// with its exact counts and PASS; several save/restore cycles in a row; a damaged snapshot is
// refused with one line and a usage exit code. A SIGKILL watchdog ends a hung VMM.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "control/protocol.h"
#include "control/server.h"
#include "kvm/system.h"
#include "tests/kvm/disk_image.h"
#include "tests/kvm/vmm_process.h"

namespace {

using namespace xenkvm::testing;

// Saves the guest of the VMM at `sock` to `file`, then kills that VMM: what follows must come
// from the file alone.
void SaveAndKill(Vmm& vmm, const std::string& sock, const std::string& file) {
  const Json reply = Request(sock, "save", {file});
  ASSERT_TRUE(Ok(reply)) << reply << "\n" << vmm.output();
  EXPECT_EQ(vmm.output().find("xenkvm-test: PASS"), std::string::npos)
      << "the guest finished before it was saved: not a mid-run save";
  vmm.Wait(0s);  // SIGKILL
}

// One control request straight from here; the reply must be ok.
void Control(Vmm& vmm, const std::string& sock, const std::string& command,
             const std::vector<std::string>& args = {}) {
  const Json reply = Request(sock, command, args);
  ASSERT_TRUE(Ok(reply)) << reply << "\n" << vmm.output();
}

struct GuestCase {
  const char* name;
  const char* vcpus;  // as guests/CMakeLists.txt declares it
  const char* stage;  // saved once the guest marks this stage: its main loop, held there
};
class Snapshot : public ::testing::TestWithParam<GuestCase> {};

// Saved once the guest marks `stage` (its main loop: ports bound, events or timers flowing),
// where it is held working (guests/runtime/xs.h) until the restored process releases it.
TEST_P(Snapshot, SavedMidRunFinishesInANewProcess) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  const auto [guest, vcpus, stage] = GetParam();
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string snap = dir.path + "/guest.snap", sock = dir.path + "/ctl";
  const std::string elf = std::string(XENKVM_GUESTS_DIR) + "/" + guest + ".elf";
  {
    Vmm source({XENKVM_BINARY, "run", "--vcpus", vcpus, "--timeout", "100", "--control", sock,
                "--cmdline", "hold=1", elf});
    ASSERT_TRUE(source.WaitForOutput(std::string("stage ") + stage + "\n", 60s)) << source.output();
    SaveAndKill(source, sock, snap);
  }
  const std::string sock2 = dir.path + "/ctl2";
  Vmm restored({XENKVM_BINARY, "restore", snap, "--quiet", "--timeout", "100", "--control", sock2});
  EXPECT_TRUE(Ok(Release(sock2))) << restored.output();
  EXPECT_EQ(restored.Wait(110s), 0) << restored.output();
  EXPECT_NE(restored.output().find(std::string("xenkvm-test: PASS ") + guest), std::string::npos)
      << restored.output();
}

INSTANTIATE_TEST_SUITE_P(Guests, Snapshot,
                         ::testing::Values(GuestCase{"ipi_storm", "4", "11"},
                                           GuestCase{"poll_timer", "1", "12"},
                                           GuestCase{"shinfo_move", "2", "11"}),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(SnapshotCycles, IpiStormThroughThreeCyclesInARow) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  constexpr int kCycles = 3;
  const std::string elf = std::string(XENKVM_GUESTS_DIR) + "/ipi_storm.elf";
  std::string snap = dir.path + "/0.snap";
  {
    const std::string sock = dir.path + "/ctl0";
    // Held in its storm until the last process releases it.
    Vmm source({XENKVM_BINARY, "run", "--vcpus", "4", "--timeout", "100", "--control", sock,
                "--cmdline", "hold=1", elf});
    ASSERT_TRUE(source.WaitForOutput("stage 11\n", 60s)) << source.output();
    SaveAndKill(source, sock, snap);
  }
  for (int cycle = 1; cycle <= kCycles; ++cycle) {
    const std::string sock = dir.path + "/ctl" + std::to_string(cycle);
    const std::string next = dir.path + "/" + std::to_string(cycle) + ".snap";
    // The middle one restored paused (`restore --paused`), the others storming until the save.
    std::vector<std::string> args{XENKVM_BINARY, "restore", snap,        "--quiet",
                                  "--timeout",   "100",     "--control", sock};
    if (cycle == 2) args.push_back("--paused");
    Vmm vmm(args);
    ASSERT_TRUE(WaitForPath(sock, 30s)) << vmm.output();
    SaveAndKill(vmm, sock, next);
    snap = next;
  }
  const std::string sock = dir.path + "/ctl-last";
  Vmm last({XENKVM_BINARY, "restore", snap, "--quiet", "--timeout", "100", "--control", sock});
  EXPECT_TRUE(Ok(Release(sock))) << last.output();
  EXPECT_EQ(last.Wait(110s), 0) << last.output();
  EXPECT_NE(last.output().find("xenkvm-test: PASS ipi_storm"), std::string::npos) << last.output();

  // The same file with one byte changed: one line, exit code 2, nothing runs.
  std::string bytes;
  {
    std::ifstream in(snap, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 4096u);
  bytes[bytes.size() / 2] ^= 0x10;
  const std::string bad = dir.path + "/bad.snap";
  std::ofstream(bad, std::ios::binary) << bytes;
  Vmm refused({XENKVM_BINARY, "restore", bad, "--quiet", "--timeout", "30"});
  EXPECT_EQ(refused.Wait(40s), 2) << refused.output();
  EXPECT_NE(refused.output().find("snapshot file is corrupt"), std::string::npos)
      << refused.output();
}

// Twenty restores in a row, each saved again and killed, with a guest waiting on a xenstore
// watch (xs_shutdown: control/shutdown, as PV drivers do): every other restore stays paused
// (`restore --paused`), the others run until the save. The watch, its connection and the ring
// survive all of them: the last process's `shutdown` reaches the guest, which powers off.
TEST(SnapshotCycles, TwentySaveRestoreCyclesInARow) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  constexpr int kCycles = 20;
  std::string snap = dir.path + "/0.snap";
  {
    const std::string sock = dir.path + "/ctl0";
    Vmm source({XENKVM_BINARY, "run", "--timeout", "200", "--control", sock,
                XENKVM_GUESTS_DIR "/xs_shutdown.elf"});
    ASSERT_TRUE(source.WaitForOutput("xs_shutdown: waiting", 60s)) << source.output();
    SaveAndKill(source, sock, snap);
  }
  for (int cycle = 1; cycle <= kCycles; ++cycle) {
    const std::string sock = dir.path + "/ctl" + std::to_string(cycle);
    const std::string next = dir.path + "/" + std::to_string(cycle) + ".snap";
    std::vector<std::string> args{XENKVM_BINARY, "restore", snap,        "--quiet",
                                  "--timeout",   "100",     "--control", sock};
    if (cycle % 2 == 0) args.push_back("--paused");
    Vmm vmm(args);
    ASSERT_TRUE(WaitForPath(sock, 30s)) << vmm.output();
    SaveAndKill(vmm, sock, next);
    snap = next;
  }
  const std::string sock = dir.path + "/ctl-last";
  Vmm last({XENKVM_BINARY, "restore", snap, "--timeout", "100", "--control", sock});
  ASSERT_TRUE(WaitForPath(sock, 30s)) << last.output();
  Control(last, sock, "shutdown");
  EXPECT_EQ(last.Wait(110s), 0) << last.output();
  EXPECT_NE(last.output().find("xs_shutdown: poweroff requested"), std::string::npos)
      << last.output();
  EXPECT_NE(last.output().find("xenkvm-test: PASS xs_shutdown"), std::string::npos)
      << last.output();
}

// Our blkfront guest saved while it does I/O (held reading at stage 11: requests in flight), the
// source kept paused so it writes nothing after the file, and restored with the same --disk:
// the backends reconnect where the rings stood, the guest finishes every scenario, and the
// images hold exactly what it wrote.
TEST(SnapshotDisk, BlkfrontSavedMidIoFinishesWithItsDataVerified) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  DiskImage rw(8192, 0xa1), ro(2048, 0xb2);
  ASSERT_TRUE(rw.ok() && ro.ok());
  const std::string snap = dir.path + "/guest.snap", sock = dir.path + "/ctl";
  std::string source_output;
  {
    Vmm source({XENKVM_BINARY, "run", "--timeout", "100", "--control", sock, "--disk", rw.path(),
                "--disk", ro.path() + ",ro", "--cmdline", "hold=1",
                XENKVM_GUESTS_DIR "/blkfront.elf"});
    ASSERT_TRUE(source.WaitForOutput("stage 11\n", 60s)) << source.output();
    Control(source, sock, "pause");
    Control(source, sock, "save", {snap});
    EXPECT_EQ(source.output().find("xenkvm-test: PASS"), std::string::npos)
        << "the guest finished before it was saved: not a mid-run save";
    source_output = source.output();
    source.Wait(0s);  // SIGKILL, still paused
  }
  const std::string sock2 = dir.path + "/ctl2";
  Vmm restored({XENKVM_BINARY, "restore", snap, "--quiet", "--timeout", "100", "--disk", rw.path(),
                "--disk", ro.path() + ",ro", "--control", sock2});
  EXPECT_TRUE(Ok(Release(sock2))) << restored.output();
  EXPECT_EQ(restored.Wait(110s), 0) << restored.output();
  // Each scenario passed, before the save or after the restore; the last ones after it.
  const std::string out = source_output + restored.output();
  for (const char* scenario : kBlkfrontScenarios)
    EXPECT_NE(out.find(std::string("blkfront: PASS ") + scenario), std::string::npos) << scenario;
  EXPECT_NE(restored.output().find("blkfront: PASS read-only"), std::string::npos);
  EXPECT_NE(restored.output().find("xenkvm-test: PASS blkfront"), std::string::npos) << out;
  ExpectBlkfrontWrites(rw, ro);
}

// GRUB (Debian's stock Xen PVH image) saved at its prompt and restored in a new process still
// answers a command typed through the control socket (send-key), then halts on `halt`.
TEST(SnapshotGrub, SavedAtItsPromptAnswersATypedCommand) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  constexpr char kGrubStock[] = "/usr/lib/grub-xen/grub-i386-xen_pvh.bin";
  if (access(kGrubStock, R_OK) != 0)
    GTEST_SKIP() << kGrubStock << " not installed (scripts/deps.sh): skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string snap = dir.path + "/grub.snap", sock = dir.path + "/ctl";
  {
    Vmm source(
        {XENKVM_BINARY, "run", "--quiet", "--timeout", "200", "--control", sock, kGrubStock});
    ASSERT_TRUE(source.WaitForOutput("grub>", 180s)) << source.output();
    SaveAndKill(source, sock, snap);
  }
  const std::string sock2 = dir.path + "/ctl2";
  Vmm restored({XENKVM_BINARY, "restore", snap, "--quiet", "--timeout", "100", "--control", sock2});
  ASSERT_TRUE(WaitForPath(sock2, 30s)) << restored.output();
  Control(restored, sock2, "send-key", {"echo typed-after-$restore\r"});
  // The command's output: the text with $restore expanded to nothing (the typed line echoes
  // with it).
  const auto answered = [&restored] {
    const std::string out = restored.output();
    return out.find("typed-after-\r") != std::string::npos ||
           out.find("typed-after-\n") != std::string::npos;
  };
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!answered() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(answered()) << restored.output();
  Control(restored, sock2, "send-key", {"halt\r"});
  EXPECT_EQ(restored.Wait(60s), 0) << restored.output();
}

}  // namespace
