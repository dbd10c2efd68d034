// A Linux x86 bzImage (Debian's /boot/vmlinuz-*): the boot protocol's setup header as
// Documentation/arch/x86/boot.rst defines it ("HdrS" at 0x202, protocol >= 2.08 for
// payload_offset/payload_length), read as Xen's bzImage loader does to find the compressed
// vmlinux inside.
#pragma once

#include <cstdint>
#include <span>

#include "abi/result.h"

namespace xenkvm::boot {

// File offsets of the setup header fields we read (boot.rst, "The real-mode kernel header").
inline constexpr uint64_t kSetupSectsOffset = 0x1f1;     // u8
inline constexpr uint64_t kHeaderMagicOffset = 0x202;    // "HdrS"
inline constexpr uint64_t kVersionOffset = 0x206;        // u16, major << 8 | minor
inline constexpr uint64_t kPayloadOffsetOffset = 0x248;  // u32, from the protected-mode part
inline constexpr uint64_t kPayloadLengthOffset = 0x24c;  // u32
inline constexpr uint64_t kSetupHeaderEnd = 0x250;       // the file holds at least this much
inline constexpr uint16_t kMinProtocolVersion = 0x0208;  // first with payload_offset/length

struct SetupHeader {
  uint16_t version = 0;                // boot protocol version (0x020f for Linux 6.1)
  uint32_t setup_sects = 0;            // real-mode setup sectors; a 0 in the file means 4
  uint64_t protected_mode_offset = 0;  // (setup_sects + 1) * 512: the 32-bit kernel's start
  uint64_t payload_offset = 0;         // file offset of the compressed vmlinux
  uint64_t payload_length = 0;         // its length (Linux appends the decompressed size: the
                                       // last 4 bytes, little endian)
};

// Has the "HdrS" magic where the setup header puts it (says nothing of validity).
bool IsBzImage(std::span<const uint8_t> file);

// Validates the header against the file: magic, protocol version, and every offset and length
// inside the file. One error (XEN_EINVAL) for the first bad field.
Result<SetupHeader> ParseSetupHeader(std::span<const uint8_t> file);

}  // namespace xenkvm::boot
