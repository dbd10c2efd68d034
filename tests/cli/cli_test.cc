// The command line and image reading: bad options are one error line and exit code 2 (never
// an exception or a timeout that fires at once); images that aren't regular files of a
// sane size are refused before anything is read.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/control.h"
#include "cli/image.h"
#include "cli/options.h"
#include "cli/signals.h"

namespace xenkvm::cli {
namespace {

struct Parsed {
  Command cmd;
  std::string out, err;
};

Parsed Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "xenkvm");
  Parsed p;
  FILE* out = std::tmpfile();
  FILE* err = std::tmpfile();
  p.cmd = ParseCommandLine(static_cast<int>(args.size()), args.data(), out, err);
  for (auto [f, s] : {std::pair{out, &p.out}, std::pair{err, &p.err}}) {
    std::rewind(f);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s->append(buf, n);
    std::fclose(f);
  }
  return p;
}

size_t Lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

TEST(Cli, Disks) {
  Parsed p = Parse(
      {"run", "--disk", "a.img", "--disk", "b.img,ro", "--disk", "c.img,vdev=xvdq,rw", "g.elf"});
  ASSERT_EQ(p.cmd.kind, Command::Kind::kRun) << p.err;
  const auto& d = p.cmd.run.disks;
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].path, "a.img");
  EXPECT_FALSE(d[0].read_only);
  EXPECT_EQ(d[0].vdev, "xvda");
  EXPECT_EQ(d[0].devid, 51712u);
  EXPECT_EQ(d[1].path, "b.img");
  EXPECT_TRUE(d[1].read_only);
  EXPECT_EQ(d[1].devid, 51728u);  // xvdb
  EXPECT_EQ(d[2].vdev, "xvdq");
  EXPECT_FALSE(d[2].read_only);
  EXPECT_EQ(p.cmd.run.guest, "g.elf");
  // Mini-OS's blkfront opens hda.
  Parsed hda = Parse({"run", "--disk", "m.img,vdev=hda", "mini-os"});
  ASSERT_EQ(hda.cmd.kind, Command::Kind::kRun) << hda.err;
  EXPECT_EQ(hda.cmd.run.disks[0].devid, 768u);
}

TEST(Cli, BadDisksAreOneErrorLine) {
  for (std::vector<const char*> args :
       {std::vector<const char*>{"run", "--disk", ",ro"},
        {"run", "--disk", "a.img,rx"},
        {"run", "--disk", "a.img,vdev=sdq"},
        {"run", "--disk", "a.img,vdev=hde"},
        {"run", "--disk", "a.img,vdev="},
        {"run", "--disk", "a.img", "--disk", "b.img,vdev=xvda"},
        {"run", "--disk"},
        {"run", "--disk", ""},
        {"run", "--disk", "1", "--disk", "2", "--disk", "3", "--disk", "4", "--disk", "5", "--disk",
         "6", "--disk", "7", "--disk", "8", "--disk", "9"}}) {
    Parsed p = Parse(args);
    EXPECT_EQ(p.cmd.kind, Command::Kind::kExit) << args.back();
    EXPECT_EQ(p.cmd.exit_code, kExitUsage) << args.back();
    EXPECT_EQ(Lines(p.err), 1u) << p.err;
  }
}

TEST(Cli, RunWithOptions) {
  Parsed p = Parse({"run", "--vcpus", "2", "--memory", "64", "--timeout", "1.5", "--stats",
                    "--quiet", "--log-rate", "0", "g.elf"});
  ASSERT_EQ(p.cmd.kind, Command::Kind::kRun) << p.err;
  EXPECT_EQ(p.cmd.run.machine.vcpus, 2u);
  EXPECT_TRUE(p.cmd.run.vcpus_given);
  EXPECT_EQ(p.cmd.run.machine.memory_mib, 64u);
  EXPECT_DOUBLE_EQ(p.cmd.run.timeout_s, 1.5);
  EXPECT_TRUE(p.cmd.run.stats);
  EXPECT_FALSE(p.cmd.run.machine.log_stages);
  EXPECT_EQ(p.cmd.run.machine.limits.log_per_second, 0u);
  EXPECT_EQ(p.cmd.run.guest, "g.elf");
  EXPECT_TRUE(p.err.empty());
}

TEST(Cli, BadTimeoutsAreOneErrorLine) {
  for (const char* t : {"inf", "1e300", "-1", "nan", "abc", ""}) {
    Parsed p = Parse({"run", "--timeout", t});
    EXPECT_EQ(p.cmd.kind, Command::Kind::kExit) << t;
    EXPECT_EQ(p.cmd.exit_code, kExitUsage) << t;
    EXPECT_EQ(Lines(p.err), 1u) << t << ": " << p.err;
  }
}

TEST(Cli, BadOptionsAreOneErrorLine) {
  for (std::vector<const char*> args :
       std::vector<std::vector<const char*>>{{},
                                             {"walk"},
                                             {"run", "--vcpus", "0"},
                                             {"run", "--vcpus", "65"},
                                             {"run", "--memory", "1"},
                                             {"run", "--bogus"},
                                             {"run", "a.elf", "b.elf"},
                                             {"run", "--grace", "nan"}}) {
    Parsed p = Parse(args);
    EXPECT_EQ(p.cmd.exit_code, kExitUsage);
    EXPECT_EQ(p.cmd.kind, Command::Kind::kExit);
    EXPECT_EQ(Lines(p.err), 1u) << p.err;
  }
}

TEST(Cli, HelpExitsZero) {
  Parsed p = Parse({"run", "--help"});
  EXPECT_EQ(p.cmd.kind, Command::Kind::kExit);
  EXPECT_EQ(p.cmd.exit_code, 0);
  EXPECT_NE(p.out.find("--timeout"), std::string::npos);
  EXPECT_NE(p.out.find("7 suspend"), std::string::npos);
}

TEST(Image, RefusesDevicesDirectoriesAndOversizedFiles) {
  auto zero = ReadImage("/dev/zero", 1 << 20);  // read forever before
  ASSERT_FALSE(zero);
  EXPECT_STREQ(zero.error().message, "the guest image is not a regular file");
  auto dir = ReadImage("/", 1 << 20);  // an uncaught exception (abort) before
  ASSERT_FALSE(dir);
  EXPECT_STREQ(dir.error().message, "the guest image is a directory");
  EXPECT_FALSE(ReadImage("/nonexistent/xenkvm-image", 1 << 20));

  char path[] = "/tmp/xenkvm-image-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::vector<char> bytes(5000, 'x');
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), 5000);
  close(fd);
  auto big = ReadImage(path, 4096);
  EXPECT_FALSE(big);
  auto ok = ReadImage(path, 8192);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->size(), 5000u);
  unlink(path);
}

// The signal thread: SIGTERM before any Machine exists (still loading) ends the process at
// once with 128 + 15. (With a Machine it stops the run: the kvm test SigtermEndsTheRunCleanly.)
TEST(Signals, SigtermWhileLoadingExits143) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        TerminalGuard terminal;
        SignalWatcher watcher(5, &terminal);
        kill(getpid(), SIGTERM);
        sleep(30);
        std::exit(0);
      },
      ::testing::ExitedWithCode(kExitSignalBase + SIGTERM), "");
}

// The control shutdown takes the SIGTERM path (the same exit before a Machine exists).
TEST(Signals, ControlShutdownWhileLoadingExits143) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        TerminalGuard terminal;
        SignalWatcher watcher(5, &terminal);
        if (!watcher.RequestShutdown("reboot")) std::exit(1);
        sleep(30);
        std::exit(0);
      },
      ::testing::ExitedWithCode(kExitSignalBase + SIGTERM), "");
}

TEST(Cli, RunWithControlAndCtl) {
  Parsed p = Parse({"run", "--control", "/tmp/vm.sock", "guest.elf"});
  ASSERT_EQ(p.cmd.kind, Command::Kind::kRun) << p.err;
  EXPECT_EQ(p.cmd.run.control_path, "/tmp/vm.sock");
  p = Parse({"ctl", "/tmp/vm.sock", "xenstore-write", "/a", "b"});
  ASSERT_EQ(p.cmd.kind, Command::Kind::kCtl) << p.err;
  EXPECT_EQ(p.cmd.ctl.socket, "/tmp/vm.sock");
  EXPECT_EQ(p.cmd.ctl.command, "xenstore-write");
  EXPECT_EQ(p.cmd.ctl.args, (std::vector<std::string>{"/a", "b"}));
  p = Parse({"ctl", "/tmp/vm.sock", "send-key", "--", "-x"});
  ASSERT_EQ(p.cmd.kind, Command::Kind::kCtl) << p.err;
  EXPECT_EQ(p.cmd.ctl.args, (std::vector<std::string>{"-x"}));
  p = Parse({"ctl", "/tmp/vm.sock"});  // no command
  EXPECT_EQ(p.cmd.kind, Command::Kind::kExit);
  EXPECT_EQ(p.cmd.exit_code, kExitUsage);
  EXPECT_NE(p.err.find("ctl --help"), std::string::npos) << p.err;
  p = Parse({"ctl", "--help"});
  EXPECT_EQ(p.cmd.exit_code, 0);
  EXPECT_NE(p.out.find("xenstore-write PATH VALUE"), std::string::npos) << p.out;
}

// The client against no VMM: one error line, exit 1; wrong ARGS: exit 2 before connecting.
TEST(Ctl, NoVmmAndUsageErrors) {
  FILE* out = std::tmpfile();
  FILE* err = std::tmpfile();
  EXPECT_EQ(RunCtl("/nonexistent/vm.sock", "status", {}, out, err), kExitHostError);
  EXPECT_EQ(RunCtl("/nonexistent/vm.sock", "xenstore-read", {}, out, err), kExitUsage);
  std::fclose(out);
  std::fclose(err);
}

}  // namespace
}  // namespace xenkvm::cli
