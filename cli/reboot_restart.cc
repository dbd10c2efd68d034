// The restart on reboot; see reboot_restart.h.
#include "cli/reboot_restart.h"

#include <linux/close_range.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace xenkvm::cli {
namespace {

constexpr const char* kDeadlineVar = "XENKVM_RUN_DEADLINE";  // CLOCK_MONOTONIC ns, 0 = none
constexpr const char* kRestartsVar = "XENKVM_RUN_RESTARTS";

char** saved_argv = nullptr;
uint64_t first_boot_ns = 0;  // CLOCK_MONOTONIC when the first boot started
bool has_deadline = false;
uint64_t deadline_ns = 0;
unsigned restarts = 0;

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// A decimal number the earlier boot wrote, or nullopt (absent or not ours).
std::optional<uint64_t> Inherited(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return value;
}

}  // namespace

std::optional<double> StartOfRun(char** argv) {
  saved_argv = argv;
  first_boot_ns = NowNs();
  restarts = static_cast<unsigned>(Inherited(kRestartsVar).value_or(0));
  unsetenv(kRestartsVar);
  const std::optional<uint64_t> deadline = Inherited(kDeadlineVar);
  unsetenv(kDeadlineVar);
  if (!deadline || *deadline == 0) return std::nullopt;
  has_deadline = true;
  deadline_ns = *deadline;
  const uint64_t now = NowNs();
  // Steady clock: CLOCK_MONOTONIC is the same clock in the exec'ed image.
  return deadline_ns > now ? double(deadline_ns - now) / 1e9 : 1e-3;
}

unsigned RestartCount() { return restarts; }

Result<> RestartAfterReboot(double timeout_s) {
  if (saved_argv == nullptr) return Fail(XEN_EINVAL, "no arguments to restart with");
  uint64_t deadline = 0;
  if (has_deadline) {
    deadline = deadline_ns;
  } else if (timeout_s > 0) {
    deadline = first_boot_ns + static_cast<uint64_t>(timeout_s * 1e9);
  }
  const std::string deadline_text = std::to_string(deadline);
  const std::string restarts_text = std::to_string(restarts + 1);
  if (setenv(kDeadlineVar, deadline_text.c_str(), 1) != 0 ||
      setenv(kRestartsVar, restarts_text.c_str(), 1) != 0)
    return HostFail(errno, "setenv");
  std::fflush(nullptr);
  // Everything but stdin, stdout and stderr ends with this image (KVM fds, disks, sockets).
  if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) != 0) return HostFail(errno, "close_range");
  execv("/proc/self/exe", saved_argv);
  return HostFail(errno, "exec /proc/self/exe");
}

}  // namespace xenkvm::cli
