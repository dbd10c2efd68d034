// Signal handling for a run; see signals.h.
#include "cli/signals.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/options.h"

namespace xenkvm::cli {

namespace {
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

[[noreturn]] void ForceExit(int sig, TerminalGuard* terminal) {
  if (terminal != nullptr) terminal->Restore();
  std::fflush(nullptr);
  _exit(kExitSignalBase + sig);
}
}  // namespace

TerminalGuard::TerminalGuard() {
  saved_ = ::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &mode_) == 0;
}

void TerminalGuard::Restore() {
  if (saved_) (void)::tcsetattr(STDIN_FILENO, TCSANOW, &mode_);
}

SignalWatcher::SignalWatcher(double grace_s, TerminalGuard* terminal)
    : grace_s_(grace_s), terminal_(terminal) {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  thread_ = std::thread([this] { Loop(); });
  thread_.detach();  // it may be waiting in sigwait when main returns: the process ends it
}

SignalWatcher::~SignalWatcher() = default;

void SignalWatcher::Loop() {
  const sigset_t set = StopSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  signal_.store(sig, std::memory_order_release);
  vmm::Machine* machine = machine_.load(std::memory_order_acquire);
  if (machine == nullptr) ForceExit(sig, terminal_);  // still loading: nothing to stop cleanly
  std::fprintf(stderr, "xenkvm: %s: stopping the guest (again to force)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  machine->Stop(vmm::MachineEnd{.reason = vmm::EndReason::kSignal,
                                .message = std::string("ended by ") +
                                           (sig == SIGINT ? "SIGINT" : "SIGTERM")});
  // The run normally ends within milliseconds and main exits; if not, force it.
  timespec grace{};
  grace.tv_sec = static_cast<time_t>(grace_s_);
  grace.tv_nsec = static_cast<long>((grace_s_ - std::floor(grace_s_)) * 1e9);
  siginfo_t info{};
  int again;
  do {
    again = sigtimedwait(&set, &info, &grace);
  } while (again < 0 && errno == EINTR);
  std::fprintf(stderr, "xenkvm: %s: forcing the end\n",
               again > 0 ? "second signal" : "grace period over");
  ForceExit(sig, terminal_);
}

}  // namespace xenkvm::cli
