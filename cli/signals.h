// SIGINT/SIGTERM end a run cleanly: a thread waits for them (sigwait; every other thread
// blocks them) and asks the Machine to stop with EndReason::kSignal, so console output is
// flushed, --stats printed and the terminal restored. A second signal, or the grace period
// passing without the run ending, forces the end (_exit with 128 + signal).
#pragma once

#include <termios.h>

#include <atomic>
#include <thread>

#include "vmm/machine.h"

namespace xenkvm::cli {

// Saves the terminal mode of stdin (if a terminal) and restores it on Restore()/destruction.
class TerminalGuard {
 public:
  TerminalGuard();
  ~TerminalGuard() { Restore(); }
  void Restore();

 private:
  bool saved_ = false;
  termios mode_{};
};

// Threads: construct on the main thread before any other thread starts (the signal mask is
// inherited). Attach() from the main thread once the Machine exists.
class SignalWatcher {
 public:
  SignalWatcher(double grace_s, TerminalGuard* terminal);
  ~SignalWatcher();
  void Attach(vmm::Machine* machine) { machine_.store(machine, std::memory_order_release); }
  // The signal that ended the run, or 0.
  int signal() const { return signal_.load(std::memory_order_acquire); }

 private:
  void Loop();
  const double grace_s_;
  TerminalGuard* terminal_;
  std::atomic<vmm::Machine*> machine_{nullptr};
  std::atomic<int> signal_{0};
  std::thread thread_;
};

}  // namespace xenkvm::cli
