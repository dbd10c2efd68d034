// Virtual-device numbers of PV disks (Xen's docs/misc/vbd-interface.txt): the frontend
// directory's name and its `virtual-device` key, numbered as libxl numbers them:
// xvd<letters>[<partition>], hd<a-d>[<partition>], sd<a-p>[<partition>] and plain numbers.
#pragma once

#include <cstdint>
#include <string_view>

#include "abi/result.h"

namespace xenkvm::blkif {

// xvda -> 51712 (202 << 8), xvdb1 -> 51729; disks past xvdp or partitions past 15 use the
// extended form (1 << 28 | disk << 8 | partition). hda -> 768, hdc -> 5632 (3 or 22 << 8 |
// (disk & 1) << 6 | partition, partition <= 63); sda -> 2048 (8 << 8 | disk << 4 | partition,
// partition <= 15). A decimal number is taken as it is. Errors (XEN_EINVAL): any other name,
// xvd disk >= 2^20 or partition > 255, hd past hdd, sd past sdp, number >= 2^31.
Result<uint32_t> VdevNumber(std::string_view name);

}  // namespace xenkvm::blkif
