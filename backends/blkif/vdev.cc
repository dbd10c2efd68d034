// Virtual-device numbering; see vdev.h.
#include "backends/blkif/vdev.h"

#include <charconv>
#include <utility>

namespace xenkvm::blkif {

namespace {
constexpr uint32_t kXvdMajor = 202;
constexpr uint32_t kExtended = 1u << 28;
constexpr uint32_t kMaxExtendedDisk = 1u << 20;
constexpr uint32_t kMaxExtendedPartition = 255;
constexpr uint32_t kIdeMajor0 = 3, kIdeMajor1 = 22, kScsiMajor = 8;

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// <letters>[<partition>] after the prefix: letters in bijective base 26 (a = 0 ... z = 25,
// aa = 26), the partition decimal without leading zeros.
Result<std::pair<uint32_t, uint32_t>> DiskAndPartition(std::string_view name, uint32_t max_disk,
                                                       uint32_t max_partition) {
  uint64_t disk = 0;
  size_t letters = 0;
  while (letters < name.size() && name[letters] >= 'a' && name[letters] <= 'z') {
    disk = disk * 26 + uint64_t(name[letters] - 'a' + 1);
    if (disk > uint64_t(max_disk) + 1) return Fail(XEN_EINVAL, "virtual disk index too large");
    ++letters;
  }
  if (letters == 0) return Fail(XEN_EINVAL, "virtual device has no disk letters");
  uint32_t partition = 0;
  std::string_view rest = name.substr(letters);
  if (!rest.empty()) {
    if (!AllDigits(rest) || rest.size() > 3 || (rest.size() > 1 && rest[0] == '0'))
      return Fail(XEN_EINVAL, "bad partition in virtual device name");
    std::from_chars(rest.data(), rest.data() + rest.size(), partition);
    if (partition > max_partition)
      return Fail(XEN_EINVAL, "partition too large in virtual device name");
  }
  return std::pair{uint32_t(disk - 1), partition};
}

}  // namespace

Result<uint32_t> VdevNumber(std::string_view name) {
  if (AllDigits(name)) {
    uint32_t n = 0;
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), n);
    if (ec != std::errc() || end != name.data() + name.size() || n >= (1u << 31))
      return Fail(XEN_EINVAL, "virtual device number out of range");
    return n;
  }
  if (name.starts_with("xvd")) {
    const auto [disk, partition] =
        TRY(DiskAndPartition(name.substr(3), kMaxExtendedDisk - 1, kMaxExtendedPartition));
    if (disk < 16 && partition < 16) return (kXvdMajor << 8) | (disk << 4) | partition;
    return kExtended | (disk << 8) | partition;
  }
  // The emulated-disk names, as libxl numbers them: hda..hdd on IDE majors 3 and 22 (64
  // partitions each), sda..sdp on SCSI major 8. Mini-OS's blkfront opens hda (768) by default.
  if (name.starts_with("hd")) {
    const auto [disk, partition] = TRY(DiskAndPartition(name.substr(2), 3, 63));
    return ((disk < 2 ? kIdeMajor0 : kIdeMajor1) << 8) | ((disk & 1) << 6) | partition;
  }
  if (name.starts_with("sd")) {
    const auto [disk, partition] = TRY(DiskAndPartition(name.substr(2), 15, 15));
    return (kScsiMajor << 8) | (disk << 4) | partition;
  }
  return Fail(XEN_EINVAL, "virtual device is not xvd<letters>, hd<letter> or sd<letter>");
}

}  // namespace xenkvm::blkif
