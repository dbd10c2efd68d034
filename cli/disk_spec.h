// `--disk PATH[,ro][,vdev=xvda]`: one PV disk of the guest (a blkif backend on PATH, seen by
// the guest as device/vbd/<vdev number>). PATH may not contain a comma.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "abi/result.h"

namespace xenkvm::cli {

struct DiskSpec {
  std::string path;
  bool read_only = false;
  std::string vdev;    // xvda, xvdb, ... (by position when not given)
  uint32_t devid = 0;  // its virtual-device number (blkif::VdevNumber)
};

// index: the disk's position on the command line (0 -> xvda when vdev= is absent).
// Errors (XEN_EINVAL) name what is wrong: empty path, unknown option, bad vdev.
Result<DiskSpec> ParseDiskSpec(std::string_view spec, size_t index);

}  // namespace xenkvm::cli
