// Save and restore end to end (docs/snapshots.md): a guest saved mid-run through the control
// socket, its VMM killed, and the snapshot resumed by `xenkvm restore` in a new process finishes
// with its exact counts and PASS; several save/restore cycles in a row; a damaged snapshot is
// refused with one line and a usage exit code. A SIGKILL watchdog ends a hung VMM.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "control/protocol.h"
#include "control/server.h"
#include "kvm/system.h"
#include "tests/kvm/vmm_process.h"

namespace {

using namespace xenkvm::testing;

struct TempDir {
  TempDir() {
    char tmpl[] = "/dev/shm/xenkvm-snap-XXXXXX";  // a local filesystem in the nested-KVM VM
    path = mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() {
    if (!path.empty()) std::system(("rm -rf '" + path + "'").c_str());
  }
  std::string path;
};

bool WaitForSocket(const std::string& sock, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  struct stat st {};
  while (stat(sock.c_str(), &st) != 0) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// Saves the guest of the VMM at `sock` to `file`, then kills that VMM: what follows must come
// from the file alone. The request goes straight from here (a `xenkvm ctl` process takes longer
// to start in the nested-KVM VM than the guests take to finish).
void SaveAndKill(Vmm& vmm, const std::string& sock, const std::string& file) {
  auto request = xenkvm::control::BuildRequest("save", {file});
  ASSERT_TRUE(request);
  auto reply = xenkvm::control::Call(sock, xenkvm::control::Dump(*request));
  ASSERT_TRUE(reply) << xenkvm::Describe(reply.error()) << "\n" << vmm.output();
  const Json parsed = Json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(parsed.is_object() && parsed.value("ok", false)) << *reply << "\n" << vmm.output();
  EXPECT_EQ(vmm.output().find("xenkvm-test: PASS"), std::string::npos)
      << "the guest finished before it was saved: not a mid-run save";
  vmm.Wait(0s);  // SIGKILL
}

struct GuestCase {
  const char* name;
  const char* vcpus;  // as guests/CMakeLists.txt declares it
  const char* stage;  // saved once the guest marks this stage: its main loop
};
class Snapshot : public ::testing::TestWithParam<GuestCase> {};

// Saved once the guest marks `stage` (its main loop: ports bound, events or timers flowing).
TEST_P(Snapshot, SavedMidRunFinishesInANewProcess) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  const auto [guest, vcpus, stage] = GetParam();
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string snap = dir.path + "/guest.snap", sock = dir.path + "/ctl";
  const std::string elf = std::string(XENKVM_GUESTS_DIR) + "/" + guest + ".elf";
  {
    Vmm source(
        {XENKVM_BINARY, "run", "--vcpus", vcpus, "--timeout", "100", "--control", sock, elf});
    ASSERT_TRUE(source.WaitForOutput(std::string("stage ") + stage + "\n", 60s)) << source.output();
    SaveAndKill(source, sock, snap);
  }
  Vmm restored({XENKVM_BINARY, "restore", snap, "--quiet", "--timeout", "100"});
  EXPECT_EQ(restored.Wait(110s), 0) << restored.output();
  EXPECT_NE(restored.output().find(std::string("xenkvm-test: PASS ") + guest), std::string::npos)
      << restored.output();
}

INSTANTIATE_TEST_SUITE_P(Guests, Snapshot,
                         ::testing::Values(GuestCase{"ipi_storm", "4", "11"},
                                           GuestCase{"poll_timer", "1", "12"},
                                           GuestCase{"shinfo_move", "2", "10"}),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(SnapshotCycles, SeveralSaveRestoreCyclesInARow) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  constexpr int kCycles = 3;
  const std::string elf = std::string(XENKVM_GUESTS_DIR) + "/ipi_storm.elf";
  std::string snap = dir.path + "/0.snap";
  {
    const std::string sock = dir.path + "/ctl0";
    Vmm source({XENKVM_BINARY, "run", "--vcpus", "4", "--timeout", "100", "--control", sock, elf});
    ASSERT_TRUE(source.WaitForOutput("stage 11\n", 60s)) << source.output();
    SaveAndKill(source, sock, snap);
  }
  for (int cycle = 1; cycle <= kCycles; ++cycle) {
    const std::string sock = dir.path + "/ctl" + std::to_string(cycle);
    const std::string next = dir.path + "/" + std::to_string(cycle) + ".snap";
    Vmm vmm({XENKVM_BINARY, "restore", snap, "--quiet", "--timeout", "100", "--control", sock});
    ASSERT_TRUE(WaitForSocket(sock, 30s)) << vmm.output();
    SaveAndKill(vmm, sock, next);
    snap = next;
  }
  Vmm last({XENKVM_BINARY, "restore", snap, "--quiet", "--timeout", "100"});
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

}  // namespace
