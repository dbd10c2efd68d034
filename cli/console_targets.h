// Where the console streams go, from the --console-io and --console options: Xen's console
// (console_io, what `xl dmesg` shows) and the guest's PV console ring (what `xl console` shows)
// each to stdout, stderr, a file or nowhere; ring input from stdin when the ring is on stdio.
#pragma once

#include <string>
#include <vector>

#include "abi/result.h"
#include "vmm/machine.h"

namespace xenkvm::cli {

// Syntax checks for the option values (empty string = valid, else the message).
std::string CheckConsoleIoTarget(const std::string& value);  // stdout|stderr|file:PATH|none
std::string CheckConsoleTarget(const std::string& value);    // stdio|file:PATH|none

// Opens the files (truncated, created 0644) and keeps them open until destroyed.
class ConsoleTargets {
 public:
  ConsoleTargets() = default;
  ConsoleTargets(const ConsoleTargets&) = delete;
  ConsoleTargets& operator=(const ConsoleTargets&) = delete;
  ~ConsoleTargets();
  // Fills `config` from the two option values (already checked).
  Result<> Open(const std::string& console_io, const std::string& console,
                vmm::ConsoleConfig* config);

 private:
  Result<int> OpenFile(const std::string& path);
  std::vector<int> owned_;
};

}  // namespace xenkvm::cli
