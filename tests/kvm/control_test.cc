// The control socket end to end (docs/control.md): a guest runs with `xenkvm run --control`,
// and `xenkvm ctl` drives it: status, xenstore read/write/ls, stats, send-key, pause (the
// guest really stops: no hypercall while paused, a shutdown request waits for the resume),
// resume and shutdown. A SIGKILL watchdog ends a hung VMM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "kvm/system.h"
#include "tests/kvm/vmm_process.h"

namespace {

using namespace xenkvm::testing;

std::string HypercallCounts(const std::string& socket) {
  CtlResult r = Ctl(socket, {"stats"});
  return r.reply.is_object() ? r.reply["hypercalls"].dump() : "no reply: " + r.output;
}

TEST(XenkvmControl, DrivesARunningGuest) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string sock = dir.path + "/vm.sock";
  // A PV disk the guest never opens, for disk-unplug.
  const std::string disk = dir.path + "/disk.img";
  {
    const int fd = open(disk.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    close(fd);
  }
  Vmm vmm({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "150", "--grace", "60",
           "--control", sock, "--disk", disk, XENKVM_GUESTS_DIR "/xs_shutdown.elf"});
  ASSERT_TRUE(vmm.WaitForOutput("xs_shutdown: waiting", 100s)) << vmm.output();
  SCOPED_TRACE("VMM output:\n" + vmm.output());

  struct stat st {};
  ASSERT_EQ(lstat(sock.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  CtlResult r = Ctl(sock, {"status"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.reply["state"], "running");
  EXPECT_EQ(r.reply["vcpus"], 1);
  const std::string home = "/local/domain/" + std::to_string(r.reply["domid"].get<int>());

  r = Ctl(sock, {"xenstore-read", home + "/name"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.reply["value"], "guest");
  r = Ctl(sock, {"xenstore-write", home + "/data/ctl-test", "hello"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Ctl(sock, {"xenstore-read", home + "/data/ctl-test"});
  EXPECT_EQ(r.reply["value"], "hello") << r.output;
  r = Ctl(sock, {"xenstore-ls", home + "/data"});
  EXPECT_EQ(r.reply["children"], Json::array({"ctl-test"})) << r.output;
  r = Ctl(sock, {"xenstore-read", home + "/no/such/node"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.reply["ok"], false) << r.output;

  r = Ctl(sock, {"stats"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(r.reply["xenstore_ring"]["requests_bytes"].get<uint64_t>(), 0u) << r.output;
  EXPECT_FALSE(r.reply["ports"].empty()) << r.output;
  EXPECT_TRUE(r.reply.contains("latency")) << r.output;  // --stats records the histograms

  r = Ctl(sock, {"send-key", "x"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.reply["bytes"], 1) << r.output;
  // Hot-unplug: a frontend that never connected is removed at once, both directories.
  r = Ctl(sock, {"xenstore-read", home + "/device/vbd/51712/backend"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string backend = r.reply["value"];
  r = Ctl(sock, {"disk-unplug", "xvdb"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  r = Ctl(sock, {"disk-unplug", "xvda"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Ctl(sock, {"xenstore-read", home + "/device/vbd/51712/state"}).exit_code, 1);
  EXPECT_EQ(Ctl(sock, {"xenstore-read", backend + "/state"}).exit_code, 1);

  r = Ctl(sock, {"frobnicate"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("unknown command"), std::string::npos) << r.output;
  EXPECT_EQ(Ctl(sock, {"xenstore-write", "/only-a-path"}).exit_code, 2);  // usage
  r = Ctl(sock, {"save", dir.path + "/vm.snap"});  // tests/kvm/snapshot_test.cc
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // Pause: every vCPU parked, so no hypercall at all while paused.
  r = Ctl(sock, {"pause"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Ctl(sock, {"status"}).reply["state"], "paused");
  const std::string before = HypercallCounts(sock);
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(HypercallCounts(sock), before);
  EXPECT_EQ(Ctl(sock, {"resume"}).exit_code, 0);
  EXPECT_EQ(Ctl(sock, {"status"}).reply["state"], "running");
  r = Ctl(sock, {"resume"});  // not paused any more
  EXPECT_EQ(r.exit_code, 1) << r.output;

  // A shutdown asked for while paused is seen by the guest only after the resume.
  ASSERT_EQ(Ctl(sock, {"pause"}).exit_code, 0);
  r = Ctl(sock, {"shutdown"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(vmm.WaitForOutput("control shutdown: asked the guest to power off", 10s));
  std::this_thread::sleep_for(2s);
  r = Ctl(sock, {"xenstore-read", home + "/control/shutdown"});
  EXPECT_EQ(r.reply["value"], "poweroff") << r.output;  // the guest clears it when it acts
  EXPECT_EQ(vmm.output().find("xs_shutdown: poweroff requested"), std::string::npos);
  EXPECT_EQ(Ctl(sock, {"resume"}).exit_code, 0);

  const int code = vmm.Wait(100s);
  const std::string out = vmm.output();
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("xs_shutdown: poweroff requested"), std::string::npos) << out;
  EXPECT_NE(out.find("xenkvm-test: PASS xs_shutdown"), std::string::npos) << out;
  EXPECT_NE(lstat(sock.c_str(), &st), 0) << "the socket outlived the run";
}

// One connection to the control socket, for requests back to back.
class Connection {
 public:
  explicit Connection(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~Connection() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  // The reply, or null once the VMM is gone.
  Json Ask(const std::string& command) {
    const std::string line = Json{{"command", command}}.dump() + "\n";
    if (send(fd_, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
      return nullptr;
    std::string reply;
    char c;
    while (read(fd_, &c, 1) == 1) {
      if (c == '\n') return Json::parse(reply, nullptr, false);
      reply.push_back(c);
    }
    return nullptr;
  }

 private:
  int fd_ = -1;
};

struct StormRun {
  const char* guest;
  unsigned vcpus;
};
void PrintTo(const StormRun& r, std::ostream* os) { *os << r.guest << " on " << r.vcpus; }

class PauseCycles : public ::testing::TestWithParam<StormRun> {};

// Pause and resume back to back for the whole run, boot included (`run --paused`): the guest's
// exact counts (IPIs that must neither coalesce nor get lost; timers, polls and blocks against
// system time) still come out right and it powers off with PASS. The guest is held at its main
// loop (`hold=1`) for the first kCycles cycles, so they all happen however fast the host, then
// released; cycles go on until it ends.
TEST_P(PauseCycles, GuestPassesThroughRepeatedPauses) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  constexpr int kCycles = 40;
  const StormRun& run = GetParam();
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string sock = dir.path + "/vm.sock";
  Vmm vmm({XENKVM_BINARY, "run", "--quiet", "--timeout", "150", "--vcpus",
           std::to_string(run.vcpus), "--control", sock, "--paused", "--cmdline", "hold=1",
           std::string(XENKVM_GUESTS_DIR) + "/" + run.guest + ".elf"});
  ASSERT_TRUE(WaitForPath(sock, 30s)) << vmm.output();
  Connection conn(sock);
  ASSERT_TRUE(conn.ok()) << vmm.output();
  int cycles = 0;
  bool released = false;
  std::vector<double> pause_us, resume_us;  // request round trips, printed (not asserted)
  for (;;) {
    // Paused here (by --paused, then by the pause below): resume, then pause again.
    auto t0 = std::chrono::steady_clock::now();
    Json resumed = conn.Ask("resume");
    auto t1 = std::chrono::steady_clock::now();
    ASSERT_TRUE(resumed.is_object()) << "no reply to resume; the VMM said:\n" << vmm.output();
    ASSERT_EQ(resumed["ok"], true) << resumed.dump();
    resume_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    if (cycles == kCycles && !released) {
      ASSERT_TRUE(Ok(Release(sock))) << vmm.output();
      released = true;
    }
    t0 = std::chrono::steady_clock::now();
    Json paused = conn.Ask("pause");
    t1 = std::chrono::steady_clock::now();
    if (!paused.is_object() || paused["ok"] != true) {
      // Only a guest that has been released may end.
      ASSERT_TRUE(released) << "pause " << cycles
                            << " failed while the guest was held: " << paused.dump() << "\n"
                            << vmm.output();
      break;
    }
    pause_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    Json status = conn.Ask("status");
    ASSERT_TRUE(status.is_object()) << vmm.output();
    EXPECT_EQ(status["state"], "paused");
    ++cycles;
  }
  const int code = vmm.Wait(150s);
  const std::string out = vmm.output();
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(std::string("xenkvm-test: PASS ") + run.guest), std::string::npos) << out;
  EXPECT_GE(cycles, kCycles);
  auto median = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "%s: %d pause/resume cycles during the run; median round trip pause %.0f us, "
      "resume %.0f us\n",
      run.guest, cycles, median(pause_us), median(resume_us));
}

INSTANTIATE_TEST_SUITE_P(Guests, PauseCycles,
                         ::testing::Values(StormRun{"ipi_storm_mixed", 4},
                                           StormRun{"poll_timer", 1}),
                         [](const ::testing::TestParamInfo<StormRun>& p) {
                           return std::string(p.param.guest);
                         });

}  // namespace
