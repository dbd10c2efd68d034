// The control socket's view of a running Machine (docs/control.md): control::ControlTarget
// over vmm::Machine, the signal watcher (shutdown takes the SIGTERM path) and the --stats
// counters as JSON. `xenkvm ctl` (RunCtl) is the client.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "cli/signals.h"
#include "control/protocol.h"
#include "trace/histogram.h"
#include "vmm/machine.h"

namespace xenkvm::cli {

// What --stats prints, as JSON (latency histograms only when they are recorded: --stats).
nlohmann::json StatsJson(vmm::Machine& machine, const trace::Stats* latency);

// Threads: any (the control server's client threads); the Machine's methods are thread-safe.
class MachineControl final : public control::ControlTarget {
 public:
  MachineControl(vmm::Machine& machine, SignalWatcher& signals, const trace::Stats* latency)
      : machine_(machine), signals_(signals), latency_(latency) {}
  nlohmann::json Status() override;
  nlohmann::json Stats() override { return StatsJson(machine_, latency_); }
  Result<> Pause() override { return machine_.Pause(); }
  Result<> Resume() override { return machine_.Resume(); }
  Result<> Shutdown(const std::string& reason) override { return signals_.RequestShutdown(reason); }
  Result<std::string> XenstoreRead(const std::string& path) override;
  Result<> XenstoreWrite(const std::string& path, const std::string& value) override;
  Result<std::vector<std::string>> XenstoreList(const std::string& path) override;
  Result<size_t> SendKeys(const std::string& text) override;
  Result<> UnplugDisk(const std::string& vdev) override;
  Result<> Save(const std::string& file) override;
  // On success the run ends (exit 0) once the reply is on its way.
  nlohmann::json Migrate(const std::string& uri) override;

 private:
  vmm::Machine& machine_;
  SignalWatcher& signals_;
  const trace::Stats* latency_;
};

// `xenkvm ctl SOCKET COMMAND [ARGS]`: prints the reply line to `out`; exit code 0 when the
// reply says ok, 1 when it does not or the VMM can't be reached, 2 for a usage error.
int RunCtl(const std::string& socket, const std::string& command,
           const std::vector<std::string>& args, FILE* out, FILE* err);

}  // namespace xenkvm::cli
