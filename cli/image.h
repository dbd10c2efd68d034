// Reading the files the user names for the guest (the kernel image, the initrd): a regular
// file no larger than a limit, read exactly to its size (so /dev/zero, a FIFO or a directory
// is one clear error, not a hang).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "abi/result.h"

namespace xenkvm::cli {

// Which file it is: only the error lines differ ("the guest image is ...", "the initrd ...").
enum class ImageKind { kGuest, kInitrd };

// Errors carry a message for the user (errno-style code in xen_errno); a file over max_bytes
// is XEN_E2BIG ("larger than --max-image" for the guest, "larger than guest RAM" for the
// initrd).
Result<std::vector<uint8_t>> ReadImage(const std::string& path, uint64_t max_bytes,
                                       ImageKind kind = ImageKind::kGuest);

}  // namespace xenkvm::cli
