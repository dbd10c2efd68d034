// Kernel file unpacking; see kernel_image.h.
#include "boot/kernel_image.h"

#include "boot/bzimage.h"
#include "boot/elf_image.h"

namespace xenkvm::boot {

Result<KernelElf> UnpackKernel(std::span<const uint8_t> file, const DecompressLimits& limits) {
  KernelElf out;
  if (IsElf(file)) {
    out.elf = file;
    return out;
  }
  if (!IsBzImage(file)) return Fail(XEN_EINVAL, "not an ELF file nor a bzImage");
  const SetupHeader header = TRY(ParseSetupHeader(file));
  const auto payload = file.subspan(header.payload_offset, header.payload_length);
  out.bzimage = true;
  out.compression = DetectCompression(payload);
  out.owned = TRY(DecompressKernelPayload(payload, limits));
  out.elf = out.owned.span();
  if (!IsElf(out.elf)) return Fail(XEN_EINVAL, "bzImage payload is not an ELF vmlinux");
  return out;
}

}  // namespace xenkvm::boot
