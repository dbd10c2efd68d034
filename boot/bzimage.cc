// The bzImage setup header; see bzimage.h.
#include "boot/bzimage.h"

#include <cstring>

namespace xenkvm::boot {

namespace {
template <class T>
T LoadLe(std::span<const uint8_t> file, uint64_t at) {
  T value;  // x86 host: the header's little-endian fields read as they are
  std::memcpy(&value, file.data() + at, sizeof(value));
  return value;
}
}  // namespace

bool IsBzImage(std::span<const uint8_t> file) {
  return file.size() >= kHeaderMagicOffset + 4 &&
         std::memcmp(file.data() + kHeaderMagicOffset, "HdrS", 4) == 0;
}

Result<SetupHeader> ParseSetupHeader(std::span<const uint8_t> file) {
  if (!IsBzImage(file)) return Fail(XEN_EINVAL, "bzImage: no HdrS setup header magic");
  if (file.size() < kSetupHeaderEnd) return Fail(XEN_EINVAL, "bzImage: setup header truncated");
  SetupHeader h;
  h.version = LoadLe<uint16_t>(file, kVersionOffset);
  if (h.version < kMinProtocolVersion)
    return Fail(XEN_EINVAL, "bzImage: boot protocol older than 2.08 (no payload fields)");
  h.setup_sects = file[kSetupSectsOffset];
  if (h.setup_sects == 0) h.setup_sects = 4;  // boot.rst: 0 stands for 4
  h.protected_mode_offset = (uint64_t{h.setup_sects} + 1) * 512;
  if (h.protected_mode_offset >= file.size())
    return Fail(XEN_EINVAL, "bzImage: setup_sects past the end of the file");
  h.payload_offset = h.protected_mode_offset + LoadLe<uint32_t>(file, kPayloadOffsetOffset);
  h.payload_length = LoadLe<uint32_t>(file, kPayloadLengthOffset);
  if (h.payload_offset >= file.size())
    return Fail(XEN_EINVAL, "bzImage: payload_offset past the end of the file");
  if (h.payload_length > file.size() - h.payload_offset)
    return Fail(XEN_EINVAL, "bzImage: payload_length past the end of the file");
  // The payload is at least a format magic plus the 4-byte size Linux appends.
  if (h.payload_length < 8) return Fail(XEN_EINVAL, "bzImage: payload too short");
  return h;
}

}  // namespace xenkvm::boot
