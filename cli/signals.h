// SIGINT/SIGTERM end a run as `xl shutdown` does: a thread waits for them (sigwait; every other
// thread blocks them) and writes control/shutdown = "poweroff" into the guest's xenstore; a
// guest that powers off ends the run as usual. A guest without a xenstore connection, a second
// signal or the grace period passing stops the Machine with EndReason::kSignal (console
// flushed, --stats printed, terminal restored); if even that doesn't end the run within
// kStopSeconds, the end is forced (_exit with 128 + signal, after the forced-end hook).
// The control socket's `shutdown` takes the same path (RequestShutdown: a SIGTERM queued to
// ourselves, tagged so the messages name it).
#pragma once

#include <termios.h>

#include <atomic>
#include <string>
#include <thread>

#include "abi/result.h"
#include "abi/sync.h"
#include "vmm/machine.h"

namespace xenkvm::cli {

// Saves the terminal mode of stdin (if a terminal) and restores it on Restore()/destruction.
class TerminalGuard {
 public:
  TerminalGuard();
  ~TerminalGuard() { Restore(); }
  // Raw input for the guest's console (no line editing, no echo, every byte as typed) while
  // keeping ISIG (Ctrl-C is SIGINT: stops the guest) and output processing (our own lines).
  void MakeRaw();
  // Idempotent, async-signal-safe (tcsetattr): every exit path calls it.
  void Restore();

 private:
  bool saved_ = false;
  termios mode_{};
};

// Threads: construct on the main thread before any other thread starts (the signal mask is
// inherited). Attach() from the main thread once the Machine exists.
class SignalWatcher {
 public:
  static constexpr double kStopSeconds = 2;
  using Hook = void (*)();
  // on_forced_end runs before a forced _exit (e.g. printing --stats); it must not block long.
  SignalWatcher(double grace_s, TerminalGuard* terminal, Hook on_forced_end = nullptr);
  ~SignalWatcher();
  void Attach(vmm::Machine* machine) { machine_.store(machine, std::memory_order_release); }
  // The signal that ended the run, or 0.
  int signal() const { return signal_.load(std::memory_order_acquire); }
  // Any thread: what SIGTERM does, with control/shutdown = `reason` ("poweroff", "reboot").
  // A second request (or signal) while the first waits stops at once.
  Result<> RequestShutdown(const std::string& reason);

 private:
  void Loop();
  // Waits up to `seconds` for another stop signal; whether one came.
  bool WaitSignal(double seconds);
  [[noreturn]] void ForceExit(int sig);
  const double grace_s_;
  TerminalGuard* terminal_;
  const Hook on_forced_end_;
  std::atomic<vmm::Machine*> machine_{nullptr};
  std::atomic<int> signal_{0};
  Mutex reason_mutex_;
  std::string reason_ XENKVM_GUARDED_BY(reason_mutex_) = "poweroff";  // the next control one
  std::thread thread_;
};

}  // namespace xenkvm::cli
