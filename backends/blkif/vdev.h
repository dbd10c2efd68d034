// Virtual-device numbers of PV disks (Xen's docs/misc/vbd-interface.txt): the frontend
// directory's name and its `virtual-device` key. xvd<letters>[<partition>] and plain numbers.
#pragma once

#include <cstdint>
#include <string_view>

#include "abi/result.h"

namespace xenkvm::blkif {

// xvda -> 51712 (202 << 8), xvdb1 -> 51729; disks past xvdp or partitions past 15 use the
// extended form (1 << 28 | disk << 8 | partition). A decimal number is taken as it is.
// Errors (XEN_EINVAL): any other name, disk >= 2^20, partition > 255, number >= 2^31.
Result<uint32_t> VdevNumber(std::string_view name);

}  // namespace xenkvm::blkif
