// Boots each test guest (build/<preset>/guests/*.elf) with `xenkvm run` and checks it powers off
// after printing "xenkvm-test: PASS <name>". A watchdog SIGKILLs a hung run (PVM may ignore
// SIGTERM) and the failure names the last stage the guest reported on port 0xe4.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kvm/system.h"
#include "tests/kvm/disk_image.h"
#include "tests/kvm/vmm_process.h"

namespace {

using xenkvm::testing::Child;
using xenkvm::testing::Spawn;

using xenkvm::testing::DiskImage;
using xenkvm::testing::ExpectBlkfrontWrites;
using xenkvm::testing::kBlkfrontScenarios;

struct GuestRun {
  std::string name;
  unsigned vcpus;
};
// Readable test parameters in ctest output.
void PrintTo(const GuestRun& r, std::ostream* os) {
  *os << r.name << " on " << r.vcpus << " vCPU(s)";
}

// XENKVM_GUEST_SPECS = "name:vcpus,name:vcpus,..." as guests/CMakeLists.txt declares them; the
// demo also runs on one vCPU (the CLI's default).
std::vector<GuestRun> ListGuests() {
  std::vector<GuestRun> runs;
  std::string specs = XENKVM_GUEST_SPECS;
  size_t pos = 0;
  while (pos < specs.size()) {
    size_t end = specs.find(',', pos);
    if (end == std::string::npos) end = specs.size();
    std::string spec = specs.substr(pos, end - pos);
    pos = end + 1;
    size_t colon = spec.find(':');
    if (colon == std::string::npos) continue;
    GuestRun run{spec.substr(0, colon), static_cast<unsigned>(std::stoul(spec.substr(colon + 1)))};
    runs.push_back(run);
    if (run.name == "demo" && run.vcpus != 1) runs.push_back({run.name, 1});
  }
  if (runs.empty()) runs.push_back({"no_guests_built", 1});
  return runs;
}

struct Outcome {
  int exit_code = -1;  // -1: killed by the watchdog
  std::string output;  // stdout and stderr, interleaved
};

// Runs xenkvm with stdout+stderr on one pipe; SIGKILL after `limit`. With signal_after > 0,
// sends `sig` that long after the start.
Outcome RunXenkvm(const std::vector<std::string>& args, std::chrono::seconds limit,
                  std::chrono::milliseconds signal_after = std::chrono::milliseconds(0),
                  int sig = SIGTERM) {
  const Child child = Spawn(args);
  if (child.pid < 0) return {};
  const pid_t pid = child.pid;
  Outcome out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  const auto signal_at = std::chrono::steady_clock::now() + signal_after;
  bool signalled = signal_after.count() == 0;
  bool killed = false;
  for (;;) {
    if (!signalled && std::chrono::steady_clock::now() >= signal_at) {
      kill(pid, sig);
      signalled = true;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);  // SIGTERM may be ignored by a vCPU stuck in the hypervisor
      killed = true;
      break;
    }
    pollfd p{child.out_fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), signalled ? 1000 : 50))) <= 0)
      continue;
    char buf[4096];
    ssize_t n = read(child.out_fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.output.append(buf, static_cast<size_t>(n));
  }
  close(child.out_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  out.exit_code = (!killed && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return out;
}

// Runs xenkvm with stdin on a pipe and stdout+stderr on another; once the output contains
// `marker`, writes `input` to its stdin (then closes it: EOF) if input is non-empty, or sends
// `sig`. SIGKILL after `limit`.
Outcome RunInteractive(const std::vector<std::string>& args, std::chrono::seconds limit,
                       const std::string& marker, const std::string& input, int sig = 0) {
  const Child child = Spawn(args, /*stdin_pipe=*/true);
  if (child.pid < 0) return {};
  const pid_t pid = child.pid;
  int in_fd = child.in_fd;  // closed once the input is written: EOF
  Outcome out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool acted = false, killed = false;
  for (;;) {
    if (!acted && out.output.find(marker) != std::string::npos) {
      acted = true;
      if (!input.empty()) {
        EXPECT_EQ(write(in_fd, input.data(), input.size()), static_cast<ssize_t>(input.size()));
        close(in_fd);
        in_fd = -1;
      }
      if (sig != 0) kill(pid, sig);
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd p{child.out_fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200))) <= 0) continue;
    char buf[4096];
    ssize_t n = read(child.out_fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.output.append(buf, static_cast<size_t>(n));
  }
  close(child.out_fd);
  if (in_fd >= 0) close(in_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  out.exit_code = (!killed && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string LastStage(const std::string& output) {
  std::regex stage_re("stage ([0-9]+)");
  std::string last = "none";
  for (auto it = std::sregex_iterator(output.begin(), output.end(), stage_re);
       it != std::sregex_iterator(); ++it) {
    last = (*it)[1];
  }
  return last;
}

class GuestTest : public ::testing::TestWithParam<GuestRun> {};

TEST_P(GuestTest, PowersOffWithPass) {
  const GuestRun& run = GetParam();
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  if (run.name == "no_guests_built") GTEST_SKIP() << "no guest images in " << XENKVM_GUESTS_DIR;
  // QEMU's TCG runs a nested guest's XSETBV without the SVM intercept (its helper_xsetbv checks
  // none), so the VM's KVM never sees the XCR0 the guest set and keeps CPUID 0xd's size at
  // the old value: a fault of the test VM, not of KVM on PVM or hardware.
  if (run.name == "xsave_cpuid" && std::getenv("XENKVM_IN_VM") != nullptr)
    GTEST_SKIP() << "nested-KVM VM under QEMU TCG: XSETBV never exits to its KVM: skipped";
  const std::string elf = std::string(XENKVM_GUESTS_DIR) + "/" + run.name + ".elf";
  // The CLI's own --timeout ends it cleanly; the SIGKILL watchdog is the backstop.
  Outcome o = RunXenkvm(
      {XENKVM_BINARY, "run", "--vcpus", std::to_string(run.vcpus), "--timeout", "60", elf},
      std::chrono::seconds(75));
  SCOPED_TRACE("guest output:\n" + o.output);
  ASSERT_NE(o.exit_code, -1) << run.name
                             << ": hung; SIGKILLed by the watchdog after 75 s (last stage "
                             << LastStage(o.output) << ")";
  EXPECT_EQ(o.exit_code, 0) << run.name << ": xenkvm exited " << o.exit_code << " (last stage "
                            << LastStage(o.output) << ")";
  EXPECT_NE(o.output.find("xenkvm-test: PASS " + run.name), std::string::npos)
      << run.name << ": no PASS line (last stage " << LastStage(o.output) << ")";
}

INSTANTIATE_TEST_SUITE_P(Guests, GuestTest, ::testing::ValuesIn(ListGuests()),
                         [](const ::testing::TestParamInfo<GuestRun>& param_info) {
                           return param_info.param.name + "_" +
                                  std::to_string(param_info.param.vcpus) + "vcpu";
                         });

// The CLI itself: a triple fault and a bad image give one clear line and a non-zero code.
TEST(XenkvmCli, RejectsNonElfImage) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--timeout", "10", "/proc/self/cmdline"},
                        std::chrono::seconds(20));
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_NE(o.output.find("not an ELF file"), std::string::npos) << o.output;
}

TEST(XenkvmCli, TimeoutEndsASpinningGuest) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--timeout", "1", XENKVM_BAD_GUESTS_DIR "/spin.elf"},
                        std::chrono::seconds(20));
  EXPECT_EQ(o.exit_code, 124) << o.output;
  EXPECT_NE(o.output.find("timeout after 1 s (last stage 1)"), std::string::npos) << o.output;
}

TEST(XenkvmCli, TimeoutEndsAVcpuHungInVmcall) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o =
      RunXenkvm({XENKVM_BINARY, "run", "--timeout", "1", XENKVM_BAD_GUESTS_DIR "/vmcall.elf"},
                std::chrono::seconds(20));
  ASSERT_NE(o.exit_code, -1) << "the CLI's watchdog did not end a vCPU stuck in vmcall";
  EXPECT_NE(o.exit_code, 0) << o.output;
}

// Linux-style hypercalls by instruction (guests/hypercall_insn.c) take the path this host
// offers: KVM's Xen intercept where KVM_CAP_XEN_HVM has it, else the two sites rewritten.
TEST(XenkvmCli, HypercallInstructionsTakeTheHostsPath) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  auto system = xenkvm::kvm::System::Open();
  ASSERT_TRUE(system.has_value());
  const bool host_has_it = (system->XenHvmFlags() & KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL) != 0;
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--stats", "--timeout", "60",
                         std::string(XENKVM_GUESTS_DIR) + "/hypercall_insn.elf"},
                        std::chrono::seconds(75));
  SCOPED_TRACE("guest output:\n" + o.output);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_NE(o.output.find("xenkvm-test: PASS hypercall_insn"), std::string::npos);
  EXPECT_NE(o.output.find("console_io by instruction"), std::string::npos);
  // The intercept is used only where the host has it, and only when the VMM enables it
  // (vmm/machine.h MachineConfig::xen_intercept: off by default for now).
  const bool intercept = o.output.find("hypercalls: intercept") != std::string::npos;
  EXPECT_TRUE(host_has_it || !intercept);
  if (intercept) {
    EXPECT_NE(o.output.find("hypercalls: intercept"), std::string::npos);
    EXPECT_NE(o.output.find("hypercall sites as written"), std::string::npos);
  } else {
    EXPECT_NE(o.output.find("xenkvm: 2 Xen hypercall sites rewritten"), std::string::npos);
    EXPECT_NE(o.output.find("hypercalls: rewritten (2 sites)"), std::string::npos);
    EXPECT_NE(o.output.find("hypercall sites rewritten to port I/O"), std::string::npos);
  }
}

// An int3 with an empty IDT: a triple fault on hardware KVM; PVM's 32-bit emulator reports an
// emulation failure instead (docs/design.md §7). Either way: one clear line and its exit code.
TEST(XenkvmCli, FatalGuestFaultIsReported) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunXenkvm(
      {XENKVM_BINARY, "run", "--timeout", "10", XENKVM_BAD_GUESTS_DIR "/triple_fault.elf"},
      std::chrono::seconds(20));
  EXPECT_TRUE(o.exit_code == 5 || o.exit_code == 6) << o.output;
  EXPECT_TRUE(o.output.find("triple fault") != std::string::npos ||
              o.output.find("KVM internal error") != std::string::npos)
      << o.output;
}

#ifdef XENKVM_BENCH_GUEST
// Not a timed test: checks the benchmark guest runs and prints both ratios (see ctest -V).
TEST(XenkvmBench, HypercallAndIpiRatios) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunXenkvm(
      {XENKVM_BINARY, "run", "--quiet", "--vcpus", "2", "--timeout", "60", XENKVM_BENCH_GUEST},
      std::chrono::seconds(75));
  ASSERT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("hypercall/exit = "), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("evtchn/native = "), std::string::npos) << o.output;
  std::printf("%s", o.output.c_str());
}
#endif

// The MSI test device (--test-device) with a guest that maps a PIRQ for it, binds it, takes
// paced and burst events, rebinds it to vCPU1 and closes it (guests/pirq_device.c). The VMM's
// signal -> handler figures for the PIRQ route and a plain irqfd MSI are shown (ctest -V).
TEST(XenkvmTestDevice, PirqEventsFromTheDevice) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  const std::string elf = std::string(XENKVM_GUESTS_DIR) + "/pirq_device.elf";
  Outcome o = RunXenkvm(
      {XENKVM_BINARY, "run", "--test-device", "--vcpus", "2", "--timeout", "90", "--stats", elf},
      std::chrono::seconds(110));
  SCOPED_TRACE("guest output:\n" + o.output);
  ASSERT_NE(o.exit_code, -1) << "hung (last stage " << LastStage(o.output) << ")";
  EXPECT_EQ(o.exit_code, 0) << "last stage " << LastStage(o.output);
  EXPECT_NE(o.output.find("xenkvm-test: PASS pirq_device"), std::string::npos);
  EXPECT_NE(o.output.find("test-device PIRQ route: 200 paced interrupts"), std::string::npos);
  EXPECT_NE(o.output.find("test-device irqfd MSI: 200 paced interrupts"), std::string::npos);
  std::regex lines("xenkvm: test-device [^\n]*\n|pirq_device: [^\n]*\n");
  for (auto it = std::sregex_iterator(o.output.begin(), o.output.end(), lines);
       it != std::sregex_iterator(); ++it)
    std::printf("%s", it->str().c_str());
}

TEST(XenkvmCli, BundledDemoWithStats) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "60"},
                        std::chrono::seconds(75));
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("xenkvm-test: PASS demo"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("delivered  coalesced     masked   deferred"), std::string::npos)
      << o.output;
  EXPECT_NE(o.output.find("xenkvm: hypercalls by number:"), std::string::npos) << o.output;
}

// --trace: the demo's trace is JSON with a track per vCPU and the events docs/trace.md lists.
TEST(XenkvmCli, BundledDemoWithTrace) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  char path[] = "/tmp/xenkvm_trace_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  Outcome o =
      RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--stats", "--trace", path, "--timeout", "60"},
                std::chrono::seconds(75));
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  unlink(path);
  ASSERT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("hypercall service: n="), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("send -> upcall injected: n="), std::string::npos) << o.output;
  const nlohmann::json trace = nlohmann::json::parse(text.str());  // throws on bad JSON
  std::map<int, std::string> tracks;
  std::map<std::string, int> count;
  bool ring_send = false, fast_delivery = false, msi_upcall = false;
  for (const auto& e : trace["traceEvents"]) {
    const std::string name = e["name"];
    if (name == "thread_name") tracks[e["tid"]] = e["args"]["name"];
    ++count[name];
    if (name == "event_channel_op" && e["ph"] == "X" && e["args"]["nr"] == 32 &&
        e["args"]["result"] == 0)
      ring_send = true;
    if (name == "deliver" && e["args"]["path"] == "fast" && e["args"]["outcome"] == "delivered")
      fast_delivery = true;
    if (name == "upcall" && e["args"]["route"] == "msi") msi_upcall = true;
  }
  std::set<std::string> names;
  for (const auto& [tid, n] : tracks) names.insert(n);
  for (const char* want : {"main", "vCPU 0", "vCPU 1", "vCPU 2", "vCPU 3", "timers"})
    EXPECT_TRUE(names.count(want)) << "no track " << want;
  EXPECT_TRUE(ring_send) << "no successful event_channel_op slice";
  EXPECT_TRUE(fast_delivery) << "no fast-path delivery";
  EXPECT_TRUE(msi_upcall) << "no upcall by the per-vCPU vector";
  EXPECT_GE(count["timer expiry"], 4) << "each vCPU arms a timer";
  EXPECT_EQ(trace["otherData"]["dropped"], 0);
}

// SIGTERM ends a run cleanly: the Machine stops, counters are printed, exit 128 + 15. The signal
// comes 5 s in, after loading even in a slow nested VM (earlier is the loading-time path,
// covered by Signals.SigtermWhileLoadingExits143).
// xl's on_reboot=restart: a guest's SCHEDOP_shutdown reboot starts it again from its image in
// the same process (fresh memory, the same disk); --on-reboot=exit ends with exit code 4.
TEST(XenkvmCli, RebootStartsTheGuestAgainInTheSameProcess) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  const std::string guest = XENKVM_GUESTS_DIR "/reboot_once.elf";
  DiskImage restart_disk(64, 1);
  ASSERT_TRUE(restart_disk.ok());
  Outcome o = RunXenkvm(
      {XENKVM_BINARY, "run", "--quiet", "--timeout", "60", "--disk", restart_disk.path(), guest},
      std::chrono::seconds(80));
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("reboot_once: boot 1: mark written, rebooting"), std::string::npos)
      << o.output;
  EXPECT_NE(o.output.find("xenkvm: boot 2 of this guest (it rebooted)"), std::string::npos)
      << o.output;
  EXPECT_NE(o.output.find("xenkvm-test: PASS reboot_once"), std::string::npos) << o.output;

  DiskImage exit_disk(64, 1);
  ASSERT_TRUE(exit_disk.ok());
  o = RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--timeout", "60", "--on-reboot", "exit",
                 "--disk", exit_disk.path(), guest},
                std::chrono::seconds(80));
  EXPECT_EQ(o.exit_code, 4) << o.output;
  EXPECT_EQ(o.output.find("boot 2"), std::string::npos) << o.output;
}

TEST(XenkvmCli, SigtermEndsTheRunCleanly) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunXenkvm(
      {XENKVM_BINARY, "run", "--stats", "--timeout", "60", XENKVM_BAD_GUESTS_DIR "/spin.elf"},
      std::chrono::seconds(30), std::chrono::milliseconds(5000), SIGTERM);
  EXPECT_EQ(o.exit_code, 143) << o.output;
  EXPECT_NE(o.output.find("ended by SIGTERM"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("xenkvm: hypercalls by number:"), std::string::npos) << o.output;
}

// The PV console ring both ways: 40 lines through the 2 KB out ring (indexes wrap), then a
// line fed on stdin comes back through the in ring.
TEST(XenkvmConsole, RingOutputWrapsAndInputIsEchoed) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunInteractive({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "100",
                              XENKVM_GUESTS_DIR "/console.elf"},
                             std::chrono::seconds(110), "console: type a line", "ping-from-host\n");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  for (int i = 0; i < 40; ++i) {
    char line[32];
    std::snprintf(line, sizeof(line), "console-line %02d: abc", i);
    EXPECT_NE(o.output.find(line), std::string::npos) << line << "\n" << o.output;
  }
  EXPECT_NE(o.output.find("console echo: ping-from-host"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("xenkvm: console ring: out "), std::string::npos) << o.output;
}

// SIGTERM writes control/shutdown = poweroff; the guest watching it powers off (exit 0).
TEST(XenkvmLifecycle, SigtermAsksTheGuestToPowerOff) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  Outcome o = RunInteractive({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "100",
                              "--grace", "60", XENKVM_GUESTS_DIR "/xs_shutdown.elf"},
                             std::chrono::seconds(110), "xs_shutdown: waiting", "", SIGTERM);
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("asked the guest to power off"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("xs_shutdown: poweroff requested"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("xenkvm-test: PASS xs_shutdown"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("xenkvm: xenstore ring: requests "), std::string::npos) << o.output;
}

// PV disks served to our blkfront guests (guests/blkfront*.c). Each test makes its images here,
// filled with the pattern the guests check (guests/runtime/blkfront.h blk_pattern), and checks
// the images afterwards and the --stats disk line against the tally the guest printed.
// The guest's "blkfront-tally <vdev>: requests R reads .. errors E" and the --stats line
// "  <vdev> requests reads writes read-bytes written-bytes errors path", as six numbers each.
std::vector<uint64_t> Numbers(const std::string& text, const std::regex& re) {
  std::smatch m;
  std::vector<uint64_t> out;
  if (!std::regex_search(text, m, re)) return out;
  for (size_t i = 1; i < m.size(); ++i) out.push_back(std::stoull(m[i]));
  return out;
}
std::vector<uint64_t> GuestTally(const std::string& output, const std::string& vdev) {
  return Numbers(output, std::regex("blkfront-tally " + vdev +
                                    ": requests (\\d+) reads (\\d+) writes (\\d+) read-bytes "
                                    "(\\d+) write-bytes (\\d+) errors (\\d+)"));
}
std::vector<uint64_t> StatsLine(const std::string& output, const std::string& vdev) {
  return Numbers(output,
                 std::regex("\n  " + vdev + " +(\\d+) +(\\d+) +(\\d+) +(\\d+) +(\\d+) +(\\d+)  /"));
}

TEST(XenkvmBlkfront, ScenariosOnAWritableAndAReadOnlyDisk) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  DiskImage rw(8192, 0xa1), ro(2048, 0xb2);  // 4 MiB and 1 MiB
  ASSERT_TRUE(rw.ok() && ro.ok());
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "100", "--disk",
                         rw.path(), "--disk", ro.path() + ",ro", XENKVM_GUESTS_DIR "/blkfront.elf"},
                        std::chrono::seconds(115));
  SCOPED_TRACE("guest output:\n" + o.output);
  EXPECT_EQ(o.exit_code, 0) << "last stage " << LastStage(o.output);
  const bool discard = rw.CanPunchHoles();
  std::printf("disk images: %s, %s (discard %s)\n", rw.path().c_str(), ro.path().c_str(),
              discard ? "offered" : "not offered: no hole punching there");
  EXPECT_NE(o.output.find("blkfront: PASS discard"), std::string::npos);
  EXPECT_EQ(o.output.find("blkfront: PASS discard (not offered: EOPNOTSUPP)") == std::string::npos,
            discard);
  for (const char* scenario : kBlkfrontScenarios)
    EXPECT_NE(o.output.find(std::string("blkfront: PASS ") + scenario), std::string::npos)
        << scenario;
  EXPECT_NE(o.output.find("xenkvm-test: PASS blkfront"), std::string::npos);
  for (const char* vdev : {"xvda", "xvdb"}) {
    const auto tally = GuestTally(o.output, vdev);
    EXPECT_EQ(tally.size(), 6u) << vdev;
    EXPECT_EQ(StatsLine(o.output, vdev), tally) << vdev << ": --stats disagrees with the guest";
  }
  // What the guest wrote landed where it said, and nowhere else it looked.
  ExpectBlkfrontWrites(rw, ro);
  if (discard)
    EXPECT_TRUE(rw.IsZero(1024, 128)) << "discarded sectors";
  else
    EXPECT_EQ(rw.FirstNotPattern(0xa1, 1024, 128), -1) << "a refused discard changed the image";
}

TEST(XenkvmBlkfront, HostileFrontendGetsErrorsWhileGoodRequestsWork) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  DiskImage disk(2048, 0xa1);
  ASSERT_TRUE(disk.ok());
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "100", "--disk",
                         disk.path(), XENKVM_GUESTS_DIR "/blkfront_hostile.elf"},
                        std::chrono::seconds(115));
  SCOPED_TRACE("guest output:\n" + o.output);
  EXPECT_EQ(o.exit_code, 0) << "last stage " << LastStage(o.output);
  for (const char* scenario :
       {"bad grant references", "out-of-range sectors", "bad segment counts", "bad sector ranges",
        "unknown operations", "wild ring indexes", "closing with requests in flight",
        "requests on a closed device", "bad connection keys"})
    EXPECT_NE(o.output.find(std::string("blkfront: PASS ") + scenario), std::string::npos)
        << scenario;
  EXPECT_NE(o.output.find("xenkvm-test: PASS blkfront_hostile"), std::string::npos);
  EXPECT_NE(o.output.find("req_prod beyond the ring; ring stopped"), std::string::npos);
  const auto tally = GuestTally(o.output, "xvda");
  ASSERT_EQ(tally.size(), 6u);
  const auto refused =
      Numbers(o.output, std::regex("blkfront_hostile: (\\d+) bad requests refused"));
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_GE(refused[0], 25u);
  EXPECT_EQ(tally[5], refused[0]) << "errors answered vs bad requests the guest sent";
  EXPECT_EQ(StatsLine(o.output, "xvda"), tally) << "--stats disagrees with the guest";
  EXPECT_EQ(disk.FirstNotPattern(0xa1, 0, 2048), -1) << "a refused request changed the image";
}

#ifdef XENKVM_BLKFRONT_BENCH_GUEST
// Not a timed test: checks the PV-disk benchmark guest runs and prints its ratio (ctest -V).
TEST(XenkvmBench, BlkfrontReadRoundTripRatio) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  DiskImage disk(2048, 0xa1);
  ASSERT_TRUE(disk.ok());
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--timeout", "100", "--disk", disk.path(),
                         XENKVM_BLKFRONT_BENCH_GUEST},
                        std::chrono::seconds(115));
  ASSERT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("read/hypercall = "), std::string::npos) << o.output;
  std::printf("%s", o.output.c_str());
}
#endif

// GRUB's Xen PVH image (Debian grub-xen-bin, installed by scripts/deps.sh): a real 32-bit
// third-party guest using grant tables, xenstore and the console ring.
constexpr char kGrubDir[] = "/usr/lib/grub/i386-xen_pvh";
constexpr char kGrubStock[] = "/usr/lib/grub-xen/grub-i386-xen_pvh.bin";

// An image with an embedded config that prints a line and halts.
TEST(XenkvmGrub, EmbeddedConfigPrintsAndHalts) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  if (access(kGrubDir, R_OK) != 0 || system("command -v grub-mkimage >/dev/null") != 0)
    GTEST_SKIP() << "grub-xen-bin / grub-common not installed (scripts/deps.sh): skipped";
  char dir[] = "/tmp/xenkvm-grub-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string cfg = std::string(dir) + "/embedded.cfg", img = std::string(dir) + "/grub.bin";
  FILE* f = std::fopen(cfg.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("echo xenkvm-grub-embedded-ok\nhalt\n", f);
  std::fclose(f);
  const std::string mk =
      "grub-mkimage -O i386-xen_pvh -p /boot/grub -c " + cfg + " -o " + img + " echo halt";
  ASSERT_EQ(system(mk.c_str()), 0) << mk;
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--timeout", "200", img},
                        std::chrono::seconds(220));
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("xenkvm-grub-embedded-ok"), std::string::npos) << o.output;
  unlink(cfg.c_str());
  unlink(img.c_str());
  rmdir(dir);
}

// The stock image on a real pty (raw mode, the terminal path): reaches `grub>`, runs a typed
// command, then `halt`.
TEST(XenkvmGrub, StockImageTakesTypedCommandsOnAPty) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  if (access(kGrubStock, R_OK) != 0)
    GTEST_SKIP() << kGrubStock << " not installed (scripts/deps.sh): skipped";
  int master = -1;
  pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(XENKVM_BINARY, XENKVM_BINARY, "run", "--quiet", "--timeout", "200", kGrubStock, nullptr);
    _exit(127);
  }
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(220);
  int step = 0;  // 0: wait for grub>, 1: typed echo, wait for its output, 2: halt typed
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      char buf[4096];
      ssize_t n = read(master, buf, sizeof(buf));
      if (n <= 0) break;  // EIO: the child closed the pty
      out.append(buf, static_cast<size_t>(n));
    }
    if (step == 0 && out.find("grub>") != std::string::npos) {
      const char cmd[] = "echo typed-on-$pty\r";
      ASSERT_EQ(write(master, cmd, sizeof(cmd) - 1), static_cast<ssize_t>(sizeof(cmd) - 1));
      step = 1;
    } else if (step == 1 && out.find("typed-on-\r") != std::string::npos) {
      ASSERT_EQ(write(master, "halt\r", 5), 5);
      step = 2;
    }
  }
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  close(master);
  EXPECT_EQ(step, 2) << out;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
}

// A PV disk for GRUB, made without root: an ext2 image (mke2fs -d) holding /boot/grub/grub.cfg,
// /hello.txt and an empty environment block. Returns the image path, or "" (with the reason in
// `why`) when e2fsprogs is missing.
std::string MakeGrubDisk(const std::string& dir, std::string& why) {
  std::string mke2fs;
  for (const char* p : {"/usr/sbin/mke2fs", "/sbin/mke2fs", "/usr/bin/mke2fs"})
    if (access(p, X_OK) == 0) mke2fs = p;
  if (mke2fs.empty()) {
    why = "mke2fs (e2fsprogs, scripts/deps.sh) not installed: skipped";
    return "";
  }
  const std::string root = dir + "/root";
  for (const std::string& d : {root, root + "/boot", root + "/boot/grub"})
    if (mkdir(d.c_str(), 0755) != 0) return why = "mkdir " + d, "";
  std::ofstream(root + "/hello.txt") << "hello from the xenkvm disk\n";
  // The stock image's embedded config looks for /boot/grub/grub.cfg on every disk and sets
  // $root to the one holding it. The entry reads a file, writes the environment block through
  // the disk (BLKIF_OP_WRITE), prints what save_env answered, and halts. The value is put
  // together at run time so that the image holds it only once GRUB has written it.
  std::ofstream(root + "/boot/grub/grub.cfg") << "set timeout=0\n"
                                                 "set default=0\n"
                                                 "menuentry \"xenkvm-disk-entry\" {\n"
                                                 "  echo entry-start\n"
                                                 "  ls\n"
                                                 "  cat /hello.txt\n"
                                                 "  set xenkvm_mark=written-by\n"
                                                 "  set xenkvm_mark=${xenkvm_mark}-grub\n"
                                                 "  save_env -f ($root)/boot/grub/grubenv "
                                                 "xenkvm_mark\n"
                                                 "  echo save_env=$?\n"
                                                 "  echo entry-done\n"
                                                 "  halt\n"
                                                 "}\n";
  // grubenv: its header line padded with '#' to 1024 bytes (what grub-editenv create writes).
  std::string env = "# GRUB Environment Block\n";
  env.resize(1024, '#');
  std::ofstream(root + "/boot/grub/grubenv") << env;
  const std::string img = dir + "/disk.img";
  const std::string mk = mke2fs + " -q -F -t ext2 -d " + root + " " + img + " 8M";
  if (system(mk.c_str()) != 0) return why = "failed: " + mk, "";
  return img;
}

// GRUB's output without its terminal control sequences (a failure message printing them would
// reset the reader's terminal and hide itself).
std::string Printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x1b') {
      if (i + 1 < s.size() && s[i + 1] == '[') {
        i += 2;
        while (i < s.size() && !(s[i] >= '@' && s[i] <= '~')) ++i;
      } else {
        ++i;
      }
    } else if (s[i] == '\n' || (s[i] >= ' ' && s[i] <= '~')) {
      out += s[i];
    }
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The stock GRUB finds grub.cfg on the PV disk by itself, shows the menu, runs the entry: the
// file's text is read through the ring and save_env's write lands in the image file.
TEST(XenkvmGrub, StockImageBootsTheMenuFromAPvDisk) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  if (access(kGrubStock, R_OK) != 0)
    GTEST_SKIP() << kGrubStock << " not installed (scripts/deps.sh): skipped";
  char dir[] = "/tmp/xenkvm-grubdisk-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string why;
  const std::string img = MakeGrubDisk(dir, why);
  if (img.empty()) GTEST_SKIP() << why;
  EXPECT_EQ(ReadFile(img).find("xenkvm_mark=written-by-grub"), std::string::npos);
  Outcome o = RunXenkvm(
      {XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "200", "--disk", img, kGrubStock},
      std::chrono::seconds(220));
  o.output = Printable(o.output);
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("Booting `xenkvm-disk-entry'"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("(xen/xvda)"), std::string::npos) << o.output;  // `ls` lists the disk
  EXPECT_NE(o.output.find("hello from the xenkvm disk"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("save_env=0"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("entry-done"), std::string::npos) << o.output;
  EXPECT_NE(ReadFile(img).find("xenkvm_mark=written-by-grub"), std::string::npos);
  // --stats: the disk's line shows reads, the one write and no errors.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.output, m,
                                std::regex(R"(xvda +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) )")))
      << o.output;
  EXPECT_GT(std::stoul(m[2]), 0u);   // reads
  EXPECT_GE(std::stoul(m[3]), 1u);   // writes
  EXPECT_EQ(std::stoul(m[6]), 0ul);  // errors
  EXPECT_EQ(system((std::string("rm -rf ") + dir).c_str()), 0);
}

// The same disk read-only (`,ro`): GRUB still boots from it, its write is refused (GRUB says
// "write failed") and the image is byte for byte what it was.
TEST(XenkvmGrub, StockImageOnAReadOnlyPvDiskCannotWrite) {
  if (!xenkvm::kvm::KvmAvailable())
    GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  if (access(kGrubStock, R_OK) != 0)
    GTEST_SKIP() << kGrubStock << " not installed (scripts/deps.sh): skipped";
  char dir[] = "/tmp/xenkvm-grubdisk-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string why;
  const std::string img = MakeGrubDisk(dir, why);
  if (img.empty()) GTEST_SKIP() << why;
  const std::string before = ReadFile(img);
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--quiet", "--stats", "--timeout", "200", "--disk",
                         img + ",ro", kGrubStock},
                        std::chrono::seconds(220));
  o.output = Printable(o.output);
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("Booting `xenkvm-disk-entry'"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("hello from the xenkvm disk"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("write failed"), std::string::npos) << o.output;
  EXPECT_EQ(o.output.find("save_env=0"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("entry-done"), std::string::npos) << o.output;
  EXPECT_TRUE(ReadFile(img) == before) << "the read-only image changed";
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.output, m,
                                std::regex(R"(xvda +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) )")))
      << o.output;
  EXPECT_EQ(std::stoul(m[3]), 0ul);  // no write done
  EXPECT_GE(std::stoul(m[6]), 1ul);  // the refused one
  EXPECT_EQ(system((std::string("rm -rf ") + dir).c_str()), 0);
}

// Hostile image paths and options: one line and an exit code, before KVM is touched.
TEST(XenkvmCli, DeviceDirectoryAndBadTimeoutAreOneLine) {
  Outcome zero = RunXenkvm({XENKVM_BINARY, "run", "/dev/zero"}, std::chrono::seconds(20));
  EXPECT_EQ(zero.exit_code, 1) << zero.output;
  EXPECT_NE(zero.output.find("not a regular file"), std::string::npos) << zero.output;
  Outcome dir = RunXenkvm({XENKVM_BINARY, "run", "/"}, std::chrono::seconds(20));
  EXPECT_EQ(dir.exit_code, 1) << dir.output;
  EXPECT_NE(dir.output.find("is a directory"), std::string::npos) << dir.output;
  for (const char* t : {"inf", "1e300", "-1", "nan"}) {
    Outcome bad = RunXenkvm({XENKVM_BINARY, "run", "--timeout", t}, std::chrono::seconds(20));
    EXPECT_EQ(bad.exit_code, 2) << t << ": " << bad.output;
  }
}

TEST(XenkvmCli, UsageErrorIsTwo) {
  Outcome o = RunXenkvm({XENKVM_BINARY, "run", "--vcpus", "0"}, std::chrono::seconds(20));
  EXPECT_EQ(o.exit_code, 2) << o.output;
}

}  // namespace
