// Reading the guest image file the user names: a regular file no larger than a limit, read
// exactly to its size (so /dev/zero, a FIFO or a directory is one clear error, not a hang).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "abi/result.h"

namespace xenkvm::cli {

// Errors carry a message for the user (errno-style code in xen_errno).
Result<std::vector<uint8_t>> ReadImage(const std::string& path, uint64_t max_bytes);

}  // namespace xenkvm::cli
