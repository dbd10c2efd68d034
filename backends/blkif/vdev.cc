// Virtual-device numbering; see vdev.h.
#include "backends/blkif/vdev.h"

#include <charconv>

namespace xenkvm::blkif {

namespace {
constexpr uint32_t kXvdMajor = 202;
constexpr uint32_t kExtended = 1u << 28;
constexpr uint32_t kMaxExtendedDisk = 1u << 20;
constexpr uint32_t kMaxExtendedPartition = 255;

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
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
  if (!name.starts_with("xvd")) return Fail(XEN_EINVAL, "virtual device is not xvd<letters>");
  name.remove_prefix(3);
  // Letters in bijective base 26: a = 0 ... z = 25, aa = 26.
  uint64_t disk = 0;
  size_t letters = 0;
  while (letters < name.size() && name[letters] >= 'a' && name[letters] <= 'z') {
    disk = disk * 26 + uint64_t(name[letters] - 'a' + 1);
    if (disk > kMaxExtendedDisk) return Fail(XEN_EINVAL, "virtual disk index too large");
    ++letters;
  }
  if (letters == 0) return Fail(XEN_EINVAL, "virtual device is not xvd<letters>");
  disk -= 1;
  uint32_t partition = 0;
  std::string_view rest = name.substr(letters);
  if (!rest.empty()) {
    if (!AllDigits(rest) || rest.size() > 3 || (rest.size() > 1 && rest[0] == '0'))
      return Fail(XEN_EINVAL, "bad partition in virtual device name");
    std::from_chars(rest.data(), rest.data() + rest.size(), partition);
    if (partition > kMaxExtendedPartition)
      return Fail(XEN_EINVAL, "partition too large in virtual device name");
  }
  if (disk >= kMaxExtendedDisk) return Fail(XEN_EINVAL, "virtual disk index too large");
  if (disk < 16 && partition < 16) return (kXvdMajor << 8) | uint32_t(disk << 4) | partition;
  return kExtended | uint32_t(disk << 8) | partition;
}

}  // namespace xenkvm::blkif
