// Decompressing a bzImage's payload (the compressed vmlinux) in every format Xen's bzImage
// loader takes (tools/libs/guest/xg_dom_bzimageloader.c): gzip, bzip2, xz, lzma, lzo (lzop's
// file format), lz4 (its legacy frame) and zstd, recognised by magic, each through Debian's
// library. Linux's build appends the decompressed size to every payload as 4 little-endian
// bytes (scripts/Makefile.lib size_append; gzip's own ISIZE trailer is the same field): the
// output must be exactly that long, and that size is checked against limits before anything
// is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>

#include "abi/result.h"

namespace xenkvm::boot {

enum class Compression : uint8_t { kNone, kGzip, kBzip2, kXz, kLzma, kLzo, kLz4, kZstd };

const char* CompressionName(Compression c);  // "gzip", ...; "none"

// By the leading magic, in the order Xen's loader tries them; kNone when none matches.
Compression DetectCompression(std::span<const uint8_t> payload);

// Bounds on what a (hostile) payload may make us allocate and write.
struct DecompressLimits {
  uint64_t max_output = uint64_t{1} << 30;  // as Xen's XC_DOM_DECOMPRESS_MAX (1 GiB)
  // The declared size may be at most max_ratio times the payload (Debian's xz kernel is ~8x;
  // a zero-filled bomb is thousands) or min_allowance, whichever is larger (tiny images).
  uint64_t max_ratio = 64;
  uint64_t min_allowance = uint64_t{16} << 20;
};

// Owned bytes whose pages are only touched as they are written: a size that lies costs
// address space, not memory.
class Buffer {
 public:
  Buffer() = default;
  // Uninitialised (new[] of uint8_t leaves them so); fails with XEN_ENOMEM, never throws.
  static Result<Buffer> Allocate(size_t size) {
    Buffer b;
    b.data_.reset(new (std::nothrow) uint8_t[size]);
    if (b.data_ == nullptr) return Fail(XEN_ENOMEM, "out of memory for the decompressed kernel");
    b.size_ = size;
    return b;
  }
  uint8_t* data() { return data_.get(); }
  std::span<const uint8_t> span() const { return {data_.get(), size_}; }
  size_t size() const { return size_; }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
};

// The payload including Linux's 4-byte size trailer. Errors (XEN_EINVAL; XEN_E2BIG for a
// declared size over the limits) say which format and what went wrong: corrupt or truncated
// data, a stream longer or shorter than declared.
Result<Buffer> DecompressKernelPayload(std::span<const uint8_t> payload,
                                       const DecompressLimits& limits = {});

}  // namespace xenkvm::boot
