// The control socket end to end (docs/control.md): a guest runs with `xenkvm run --control`,
// and `xenkvm ctl` drives it: status, xenstore read/write/ls, stats, send-key, pause (the
// guest really stops: no hypercall while paused, a shutdown request waits for the resume),
// resume and shutdown. A SIGKILL watchdog ends a hung VMM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
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
  // A unix socket needs a local filesystem: in the nested-KVM VM /tmp is the host's over 9p.
  const bool shm = access("/dev/shm", W_OK) == 0;
  char dir[64];
  std::snprintf(dir, sizeof(dir), "%s/xenkvm-ctl-XXXXXX", shm ? "/dev/shm" : "/tmp");
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string sock = std::string(dir) + "/vm.sock";
  Vmm vmm({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "150", "--grace", "60",
           "--control", sock, XENKVM_GUESTS_DIR "/xs_shutdown.elf"});
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
  r = Ctl(sock, {"frobnicate"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("unknown command"), std::string::npos) << r.output;
  EXPECT_EQ(Ctl(sock, {"xenstore-write", "/only-a-path"}).exit_code, 2);  // usage
  r = Ctl(sock, {"save", std::string(dir) + "/vm.snap"});  // tests/kvm/snapshot_test.cc
  EXPECT_EQ(r.exit_code, 0) << r.output;
  unlink((std::string(dir) + "/vm.snap").c_str());

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
  rmdir(dir);
}

}  // namespace
