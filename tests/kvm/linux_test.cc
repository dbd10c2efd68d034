// Debian's own Linux kernels, unmodified, as Xen PVH guests (scripts/linux-guest.sh builds
// them from the packages: vmlinuz as shipped, a busybox initramfs with the package's
// xen-blkfront and ext4 modules, an ext4 root file system). One boot per kernel covers the
// whole path: bzImage and initrd loading, hypercalls by instruction (rewritten or KVM's
// intercept), ACPI and SMP (2 vCPUs started by INIT-SIPI), the Xen clocksource, xenbus and two
// PV disks, the root mounted from /dev/xvda and switched to, a file the test put on it read by
// the guest and one the guest wrote found here after the run, a write through /dev/xvdb checked
// here on the image; saved mid-run and restored in a new process, where its timers, console
// and disk go on; and `xl shutdown` (xenstore control/shutdown through the control socket)
// answered by the guest's orderly power-off, ending in ACPI S5 and exit code 0.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "kvm/system.h"
#include "tests/kvm/vmm_process.h"

namespace xenkvm::testing {
namespace {

std::string ReadFile(const std::string& path, size_t limit = 1 << 20) {
  std::ifstream in(path, std::ios::binary);
  std::string data(limit, '\0');
  in.read(data.data(), static_cast<std::streamsize>(limit));
  data.resize(static_cast<size_t>(in.gcount()));
  return data;
}

bool Exists(const std::string& path) { return access(path.c_str(), R_OK) == 0; }

class LinuxGuest : public ::testing::TestWithParam<const char*> {};

TEST_P(LinuxGuest, BootsFromItsPvDiskSurvivesSaveRestoreAndShutsDown) {
  if (!kvm::KvmAvailable()) GTEST_SKIP() << "no usable /dev/kvm on this machine: kvm test skipped";
  // PVM emulates guest kernel code at microseconds per instruction: a Linux boot takes hours
  // there. scripts/test.sh boots these kernels in the nested-KVM VM on both host kernels.
  if (Exists("/sys/module/kvm_pvm"))
    GTEST_SKIP() << "PVM-backed /dev/kvm: a Linux boot is too slow here (it runs in the "
                    "nested-KVM VM stages of scripts/test.sh): skipped";
  const std::string dir = std::string(XENKVM_LINUX_GUEST_DIR) + "/" + GetParam();
  if (!Exists(dir + "/ready"))
    GTEST_SKIP() << dir << " missing: run scripts/linux-guest.sh " << GetParam() << ": skipped";
  std::string kver = ReadFile(dir + "/kernel-release");
  while (!kver.empty() && kver.back() == '\n') kver.pop_back();

  TempDir scratch;
  ASSERT_FALSE(scratch.path.empty());
  const std::string root = scratch.path + "/root.ext4", data = scratch.path + "/data.img";
  ASSERT_EQ(std::system(("cp '" + dir + "/root.ext4' '" + root + "'").c_str()), 0);
  {
    std::ofstream(data, std::ios::binary).put('\0');
    ASSERT_EQ(truncate(data.c_str(), 1 << 20), 0);
  }
  // A file the host puts on the guest's root, and one the guest leaves there (e2fsprogs'
  // debugfs reads and writes the image while no one runs on it).
  const std::string note = scratch.path + "/note", from_guest = scratch.path + "/from-guest";
  std::ofstream(note) << "note-" << getpid() << "\n";
  ASSERT_EQ(
      std::system(
          ("debugfs -w -R 'write " + note + " /from-host' '" + root + "' >/dev/null 2>&1").c_str()),
      0);
  // Booted, then saved mid-run (ticking), its process killed, restored in a new process that
  // must go on ticking, then `xl shutdown` (control/shutdown) through the new one.
  const std::string sock = scratch.path + "/control.sock", snap = scratch.path + "/linux.snap";
  std::string booted;
  {
    Vmm vmm({XENKVM_BINARY, "run", "--vcpus", "2", "--memory", "512", "--timeout", "500",
             "--initrd", dir + "/initrd.gz", "--disk", root, "--disk", data, "--control", sock,
             "--cmdline", "console=hvc0 loglevel=4", dir + "/vmlinuz"});
    const bool ticking = vmm.WaitForOutput("linux-guest: tick 2\n", 480s);
    booted = vmm.output();
    ASSERT_TRUE(ticking) << booted;
    const Json saved = Request(sock, "save", {snap});
    ASSERT_TRUE(Ok(saved)) << saved.dump();
    booted = vmm.output();
  }  // SIGKILL
  const size_t last_tick_at = booted.rfind("linux-guest: tick ");
  const int ticks_before = std::atoi(booted.c_str() + last_tick_at + 18);
  const std::string sock2 = scratch.path + "/control2.sock";
  Vmm restored({XENKVM_BINARY, "restore", snap, "--timeout", "300", "--disk", root, "--disk", data,
                "--control", sock2});
  const std::string next_tick = "linux-guest: tick " + std::to_string(ticks_before + 2) + "\n";
  EXPECT_TRUE(restored.WaitForOutput(next_tick, 240s)) << restored.output();
  EXPECT_TRUE(Ok(Request(sock2, "shutdown")));
  const int code = restored.Wait(std::chrono::seconds(60));
  const std::string after = restored.output();
  EXPECT_EQ(code, 0) << after;
  const std::string out = booted + after;
  for (const std::string& line :
       {"linux-guest: initramfs: kernel " + kver + ", 2 cpus",
        std::string("linux-guest: rootfs: /dev/xvda ext4"),
        std::string("linux-guest: cpus online 0-1"), std::string("linux-guest: clocksource xen"),
        std::string("linux-guest: xen devices vbd-51712 vbd-51728"),
        "linux-guest: from the host: note-" + std::to_string(getpid()),
        std::string("linux-guest: wrote xvdb")})
    EXPECT_NE(booted.find(line), std::string::npos) << "missing: " << line << "\n" << booted;
  for (const char* line : {"linux-guest: init asked to power off", "reboot: Power down"})
    EXPECT_NE(after.find(line), std::string::npos) << "missing after the restore: " << line << "\n"
                                                   << after;
  for (const char* bad : {"Kernel panic", "BUG:", "Oops", "response has wrong operation"})
    EXPECT_EQ(out.find(bad), std::string::npos) << bad << "\n" << out;
  ASSERT_EQ(std::system(
                ("debugfs -R 'dump /from-guest " + from_guest + "' '" + root + "' >/dev/null 2>&1")
                    .c_str()),
            0);
  EXPECT_EQ(ReadFile(from_guest).rfind("written by " + kver + " at uptime ", 0), 0u)
      << ReadFile(from_guest);
  const std::string written = ReadFile(data, 1024);
  EXPECT_EQ(written.rfind("xenkvm-linux-guest-wrote-this " + kver + "\n", 0), 0u) << written;
  // The restored guest's last tick reached the disk: later than any before the save.
  EXPECT_GE(std::atoi(written.c_str() + 512 + 5), ticks_before + 2) << written.substr(512, 16);
}

INSTANTIATE_TEST_SUITE_P(Debian, LinuxGuest, ::testing::Values("6.1", "6.12"),
                         [](const ::testing::TestParamInfo<const char*>& param_info) {
                           std::string name = std::string("linux_") + param_info.param;
                           for (char& c : name)
                             if (c == '.') c = '_';
                           return name;
                         });

}  // namespace
}  // namespace xenkvm::testing
