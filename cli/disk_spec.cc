// --disk parsing; see disk_spec.h.
#include "cli/disk_spec.h"

#include "backends/blkif/vdev.h"

namespace xenkvm::cli {

Result<DiskSpec> ParseDiskSpec(std::string_view spec, size_t index) {
  DiskSpec disk;
  size_t comma = spec.find(',');
  disk.path = std::string(spec.substr(0, comma));
  if (disk.path.empty()) return UsageFail("--disk needs a path");
  while (comma != std::string_view::npos) {
    spec.remove_prefix(comma + 1);
    comma = spec.find(',');
    const std::string_view option = spec.substr(0, comma);
    if (option == "ro") {
      disk.read_only = true;
    } else if (option == "rw") {
      disk.read_only = false;
    } else if (option.starts_with("vdev=")) {
      disk.vdev = std::string(option.substr(5));
      if (disk.vdev.empty()) return UsageFail("--disk: vdev= needs a name");
    } else {
      return UsageFail("--disk: unknown option (want ro, rw or vdev=NAME)");
    }
  }
  if (disk.vdev.empty()) {
    if (index >= 26) return UsageFail("--disk: more than 26 disks need vdev=NAME");
    disk.vdev = std::string("xvd") + char('a' + index);
  }
  auto devid = blkif::VdevNumber(disk.vdev);
  if (!devid)
    return UsageFail(
        "--disk: vdev must be xvd<letters>, hd<a-d>, sd<a-p> [<partition>] or a number");
  disk.devid = *devid;
  return disk;
}

}  // namespace xenkvm::cli
