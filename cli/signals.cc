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

const char* Name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

// Tags our own queued SIGTERM (RequestShutdown) apart from one sent by a user.
constexpr int kControlCookie = 0x78656e6b;  // "xenk"

bool FromControl(const siginfo_t& info) {
  return info.si_code == SI_QUEUE && info.si_pid == ::getpid() &&
         info.si_value.sival_int == kControlCookie;
}

// Waits for the next stop signal; 0 when `timeout` (if given) passed first.
int WaitStop(const timespec* timeout, siginfo_t* info) {
  const sigset_t set = StopSignals();
  int got;
  do {
    got = timeout ? sigtimedwait(&set, info, timeout) : sigwaitinfo(&set, info);
  } while (got < 0 && errno == EINTR);
  return got > 0 ? got : 0;
}
}  // namespace

Result<> SignalWatcher::RequestShutdown(const std::string& reason) {
  {
    MutexLock lock(reason_mutex_);
    reason_ = reason;
  }
  sigval value{};
  value.sival_int = kControlCookie;
  if (::sigqueue(::getpid(), SIGTERM, value) != 0) return HostFail(errno, "sigqueue(SIGTERM)");
  return {};
}

void SignalWatcher::ForceExit(int sig) {
  if (on_forced_end_ != nullptr) on_forced_end_();
  if (terminal_ != nullptr) terminal_->Restore();
  std::fflush(nullptr);
  _exit(kExitSignalBase + sig);
}

TerminalGuard::TerminalGuard() {
  saved_ = ::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &mode_) == 0;
}

void TerminalGuard::MakeRaw() {
  if (!saved_) return;
  termios raw = mode_;
  ::cfmakeraw(&raw);
  raw.c_lflag |= ISIG;
  raw.c_oflag |= mode_.c_oflag & (OPOST | ONLCR);
  (void)::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
}

void TerminalGuard::Restore() {
  if (saved_) (void)::tcsetattr(STDIN_FILENO, TCSANOW, &mode_);
}

SignalWatcher::SignalWatcher(double grace_s, TerminalGuard* terminal, Hook on_forced_end)
    : grace_s_(grace_s), terminal_(terminal), on_forced_end_(on_forced_end) {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  thread_ = std::thread([this] { Loop(); });
  thread_.detach();  // it may be waiting in sigwait when main returns: the process ends it
}

SignalWatcher::~SignalWatcher() = default;

bool SignalWatcher::WaitSignal(double seconds) {
  timespec wait{};
  wait.tv_sec = static_cast<time_t>(seconds);
  wait.tv_nsec = static_cast<long>((seconds - std::floor(seconds)) * 1e9);
  siginfo_t info{};
  return WaitStop(&wait, &info) != 0;
}

void SignalWatcher::Loop() {
  siginfo_t info{};
  int sig = 0;
  while ((sig = WaitStop(nullptr, &info)) == 0) {
  }
  signal_.store(sig, std::memory_order_release);
  vmm::Machine* machine = machine_.load(std::memory_order_acquire);
  if (machine == nullptr) ForceExit(sig);  // still loading: nothing to stop cleanly
  const char* who = FromControl(info) ? "control shutdown" : Name(sig);
  std::string reason = "poweroff";
  if (FromControl(info)) {
    MutexLock lock(reason_mutex_);
    reason = reason_;
  }
  const std::string ended = std::string("ended by ") + who;
  if (auto r = machine->RequestShutdown(reason); r) {
    std::fprintf(stderr, "xenkvm: %s: asked the guest to %s (control/shutdown); again to stop\n",
                 who, reason == "reboot" ? "reboot" : "power off");
    if (!WaitSignal(grace_s_))
      std::fprintf(stderr, "xenkvm: the guest did not power off within %g s\n", grace_s_);
  } else {
    std::fprintf(stderr, "xenkvm: %s: stopping the guest (%s)\n", who, r.error().message);
  }
  machine->Stop(vmm::MachineEnd{.reason = vmm::EndReason::kSignal, .message = ended});
  // The run normally ends within milliseconds and main exits; if not, force it.
  const bool again = WaitSignal(kStopSeconds);
  std::fprintf(stderr, "xenkvm: %s: forcing the end\n",
               again ? "another signal" : "the guest did not stop");
  ForceExit(sig);
}

}  // namespace xenkvm::cli
