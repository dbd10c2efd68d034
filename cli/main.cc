// xenkvm: boot a 64-bit Xen PVH guest on plain KVM (no kernel Xen support) and run it to
// shutdown. Thin by design: parse arguments, run vmm::Machine, map its end to an exit code.
//
//   xenkvm run [--vcpus N] [--memory MiB] [--cmdline STR] [--timeout S] [--stats] [--quiet] [GUEST.elf]
//
// Exit codes: 0 poweroff, 1 host error, 2 usage, 3 guest crash (or other shutdown reason),
// 4 guest reboot, 5 triple fault, 6 KVM internal/emulation error, 124 timeout.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "vmm/machine.h"

namespace {

using xenkvm::vmm::EndReason;

constexpr int kExitHostError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCrash = 3;
constexpr int kExitReboot = 4;
constexpr int kExitTripleFault = 5;
constexpr int kExitInternalError = 6;
constexpr int kExitTimeout = 124;

struct Options {
  xenkvm::vmm::MachineConfig machine;
  double timeout_s = 0;
  bool vcpus_given = false;
  bool stats = false;
  std::string guest;
};

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: xenkvm run [--vcpus N] [--memory MiB] [--cmdline STR] [--timeout S] [--stats] [--quiet] "
               "[GUEST.elf]\n"
               "  Boots a 64-bit Xen PVH guest (ELF with XEN_ELFNOTE_PHYS32_ENTRY) on KVM; without GUEST,\n"
               "  the bundled demo guest (on 4 vCPUs unless --vcpus). Defaults: 1 vCPU, 128 MiB, no timeout.\n"
               "  Exit code: 0 poweroff, 3 crash, 4 reboot, 5 triple fault,\n"
               "  6 emulation error, 124 timeout, 1 host error, 2 usage.\n");
}

bool ParseUnsigned(const char* s, uint64_t max, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v > max) return false;
  *out = v;
  return true;
}

// On failure *why names the problem for the one-line error.
bool Parse(int argc, char** argv, Options* o, std::string* why) {
  if (argc < 2 || std::strcmp(argv[1], "run") != 0) {
    *why = "the only command is `run`";
    return false;
  }
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    uint64_t n = 0;
    if (a == "--vcpus") {
      const char* v = value();
      if (!v || !ParseUnsigned(v, 64, &n) || n == 0) {
        *why = "--vcpus takes 1..64";
        return false;
      }
      o->machine.vcpus = static_cast<uint32_t>(n);
      o->vcpus_given = true;
    } else if (a == "--memory") {
      const char* v = value();
      if (!v || !ParseUnsigned(v, 3072, &n) || n < 2) {
        *why = "--memory takes 2..3072 (MiB; RAM stays below the LAPIC at 3.98 GiB)";
        return false;
      }
      o->machine.memory_mib = n;
    } else if (a == "--cmdline") {
      const char* v = value();
      if (!v) {
        *why = "--cmdline needs a value";
        return false;
      }
      o->machine.cmdline = v;
    } else if (a == "--timeout") {
      const char* v = value();
      char* end = nullptr;
      if (v) o->timeout_s = std::strtod(v, &end);
      if (!v || *end != '\0' || o->timeout_s < 0) {
        *why = "--timeout takes seconds (0 = none)";
        return false;
      }
    } else if (a == "--stats") {
      o->stats = true;
    } else if (a == "--quiet") {
      o->machine.log_stages = false;
    } else if (a == "-h" || a == "--help") {
      Usage(stdout);
      std::exit(0);
    } else if (!a.empty() && a[0] == '-') {
      *why = "unknown option " + a;
      return false;
    } else if (o->guest.empty()) {
      o->guest = a;
    } else {
      *why = "one guest image only";
      return false;
    }
  }
  return true;
}

// The demo guest: where this build put it, else next to an installed binary.
std::string DemoGuestPath() {
  if (access(XENKVM_DEMO_GUEST, R_OK) == 0) return XENKVM_DEMO_GUEST;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    dir.resize(dir.rfind('/'));
    for (const char* rel : {"/../guests/demo.elf", "/demo.elf"}) {
      std::string p = dir + rel;
      if (access(p.c_str(), R_OK) == 0) return p;
    }
  }
  return XENKVM_DEMO_GUEST;
}

void PrintStats(xenkvm::vmm::Machine& m) {
  std::fprintf(stderr, "xenkvm: event channel counters\n");
  std::fprintf(stderr, "  %6s %10s %10s %10s %10s %10s\n", "port", "sent", "delivered", "coalesced", "masked",
               "deferred");
  for (const auto& [port, c] : m.engine().AllCounters()) {
    std::fprintf(stderr, "  %6u %10llu %10llu %10llu %10llu %10llu\n", port, static_cast<unsigned long long>(c.sent),
                 static_cast<unsigned long long>(c.delivered), static_cast<unsigned long long>(c.coalesced),
                 static_cast<unsigned long long>(c.masked), static_cast<unsigned long long>(c.deferred));
  }
  std::fprintf(stderr, "xenkvm: hypercalls by number:");
  for (const auto& [nr, count] : m.domain().HypercallCounts()) {
    std::fprintf(stderr, " %u:%llu", nr, static_cast<unsigned long long>(count));
  }
  std::fprintf(stderr, "\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (argc >= 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0)) {
    Usage(stdout);
    return 0;
  }
  std::string why;
  if (!Parse(argc, argv, &o, &why)) {
    std::fprintf(stderr, "xenkvm: %s\n", why.c_str());
    Usage(stderr);
    return kExitUsage;
  }
  if (o.guest.empty()) {
    // The demo shows event channels across vCPUs (guests/ declares it for 4): give it four.
    o.guest = DemoGuestPath();
    if (!o.vcpus_given) o.machine.vcpus = 4;
  }

  std::ifstream file(o.guest, std::ios::binary);
  if (!file) {
    std::fprintf(stderr, "xenkvm: cannot read guest image %s\n", o.guest.c_str());
    return kExitHostError;
  }
  std::vector<uint8_t> image((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());

  auto machine = xenkvm::vmm::Machine::Create(o.machine);
  if (!machine) {
    std::fprintf(stderr, "xenkvm: cannot create the VM: %s\n", xenkvm::Describe(machine.error()).c_str());
    return kExitHostError;
  }
  xenkvm::vmm::Machine& m = **machine;
  if (auto r = m.LoadGuest(image); !r) {
    std::fprintf(stderr, "xenkvm: cannot load %s: %s\n", o.guest.c_str(), r.error().message);
    return kExitHostError;
  }

  if (o.timeout_s > 0) {
    // A vCPU may hang inside KVM_RUN (e.g. a raw vmcall on PVM) and the process may not react
    // to SIGTERM: the watchdog ends the process itself.
    std::thread([&m, t = o.timeout_s] {
      std::this_thread::sleep_for(std::chrono::duration<double>(t));
      std::fprintf(stderr, "xenkvm: timeout after %g s (last stage %u)\n", t, m.LastStage());
      std::fflush(nullptr);
      _exit(kExitTimeout);
    }).detach();
  }

  xenkvm::vmm::MachineEnd end = m.Run();
  if (o.stats) PrintStats(m);
  int code = 0;
  switch (end.reason) {
    case EndReason::kPoweroff: code = 0; break;
    case EndReason::kReboot: code = kExitReboot; break;
    case EndReason::kCrash: code = kExitCrash; break;
    case EndReason::kTripleFault: code = kExitTripleFault; break;
    case EndReason::kInternalError: code = kExitInternalError; break;
    case EndReason::kHostError: code = kExitHostError; break;
    case EndReason::kStuck: code = kExitHostError; break;
  }
  if (code != 0) std::fprintf(stderr, "xenkvm: %s (last stage %u)\n", end.message.c_str(), m.LastStage());
  std::fflush(nullptr);
  // Threads stuck in KVM_RUN can't be joined; leave without destructors in that case.
  if (end.threads_stuck) _exit(code);
  return code;
}
