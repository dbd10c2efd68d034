// The control protocol (docs/control.md): one JSON object per line each way. A request names
// its `command` and that command's fields; the reply has "ok" and either the command's result
// fields or "error". Dispatcher validates a request line (it comes from any local user with
// access to the socket: malformed input gets an error reply, never a crash) and calls the
// ControlTarget; BuildRequest is the client side (`xenkvm ctl PATH COMMAND ARGS...`).
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "abi/result.h"

namespace xenkvm::control {

// The longest request line the server reads (longer ones get an error reply and are skipped).
constexpr size_t kMaxRequestBytes = 16 * 1024;

// What the control socket drives. Called from the server's client threads, several at once.
class ControlTarget {
 public:
  virtual ~ControlTarget() = default;
  virtual nlohmann::json Status() = 0;
  virtual nlohmann::json Stats() = 0;
  virtual Result<> Pause() = 0;
  virtual Result<> Resume() = 0;
  // "poweroff" or "reboot": control/shutdown, then a forced end after the grace period.
  virtual Result<> Shutdown(const std::string& reason) = 0;
  virtual Result<std::string> XenstoreRead(const std::string& path) = 0;
  virtual Result<> XenstoreWrite(const std::string& path, const std::string& value) = 0;
  virtual Result<std::vector<std::string>> XenstoreList(const std::string& path) = 0;
  // Console input bytes for the guest; returns how many were taken.
  virtual Result<size_t> SendKeys(const std::string& text) = 0;
  virtual Result<> Save(const std::string& file) = 0;
  // Live migration to `uri` (unix:PATH, exec:COMMAND): the whole reply, "ok" included, since a
  // failure carries the destination's own line and a success its figures.
  virtual nlohmann::json Migrate(const std::string& uri) = 0;
  // Hot-unplug of PV disk `vdev` (xvda, ...): the backend asks the frontend to close.
  virtual Result<> UnplugDisk(const std::string& vdev) = 0;
};

// One command: its name and its string fields in the order `xenkvm ctl` takes them as ARGS
// (optional ones last).
struct CommandSpec {
  const char* name;
  std::vector<const char*> fields;
  size_t required;  // how many of `fields` must be present
  const char* help;
};
const std::vector<CommandSpec>& Commands();

// Thread-safe (no state of its own): Handle may run on several threads at once.
class Dispatcher {
 public:
  explicit Dispatcher(ControlTarget& target) : target_(target) {}
  // One request line (without its newline) -> one reply line (without its newline).
  std::string Handle(std::string_view line);

 private:
  nlohmann::json Dispatch(const nlohmann::json& request);
  ControlTarget& target_;
};

// An error reply line, for the server's own refusals (line too long, too many clients).
std::string ErrorReply(std::string_view message);
// JSON text that never throws on strings that are not UTF-8 (bytes are replaced).
std::string Dump(const nlohmann::json& value);

// The client: COMMAND and its ARGS as a request object. A known command with the wrong number
// of ARGS is a usage error; an unknown one is sent as it is (the server answers it).
Result<nlohmann::json> BuildRequest(const std::string& command,
                                    const std::vector<std::string>& args);

}  // namespace xenkvm::control
