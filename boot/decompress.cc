// The compressed-kernel decoders; see decompress.h. Each decodes straight into one buffer of
// the declared size and reports how it stopped; the checks common to all (stream ended, exact
// length) are made once, in DecompressKernelPayload.
#include "boot/decompress.h"

#include <bzlib.h>
#include <lz4.h>
#include <lzma.h>
#include <lzo/lzo1x.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace xenkvm::boot {

namespace {

// How a decoder stopped.
enum class Outcome {
  kEnded,      // the stream's end marker was reached; `produced` bytes written
  kCorrupt,    // the data are not a valid stream
  kTruncated,  // the input ran out before the stream's end
  kOverflow,   // the stream goes on past the declared size
  kNoMemory,   // the decoder could not get (or would need more than allowed) working memory
};

struct Decoded {
  Outcome outcome;
  uint64_t produced = 0;
};

// One line per format and way of failing (messages are static strings).
struct Messages {
  const char* corrupt;
  const char* truncated;
  const char* overflow;
  const char* short_output;
  const char* no_memory;
};
#define XENKVM_BOOT_MESSAGES(name)                                                      \
  Messages {                                                                            \
    name " kernel: corrupt compressed data", name " kernel: compressed data truncated", \
        name " kernel: decompresses to more than the size the image declares",          \
        name " kernel: decompresses to less than the size the image declares",          \
        name " kernel: the decoder needs more memory than allowed"                      \
  }
const Messages kGzipMessages = XENKVM_BOOT_MESSAGES("gzip");
const Messages kBzip2Messages = XENKVM_BOOT_MESSAGES("bzip2");
const Messages kXzMessages = XENKVM_BOOT_MESSAGES("xz");
const Messages kLzmaMessages = XENKVM_BOOT_MESSAGES("lzma");
const Messages kLzoMessages = XENKVM_BOOT_MESSAGES("lzo");
const Messages kLz4Messages = XENKVM_BOOT_MESSAGES("lz4");
const Messages kZstdMessages = XENKVM_BOOT_MESSAGES("zstd");
#undef XENKVM_BOOT_MESSAGES

// Linux's xz kernels use a 32 MiB dictionary and lzma ones up to 64 MiB (`lzma -9`); a header
// asking for more than this is refused rather than allocated.
constexpr uint64_t kLzmaMemLimit = uint64_t{128} << 20;
// lzop's block limit as Xen's loader has it (lzop itself writes 256 KiB blocks).
constexpr uint32_t kLzoMaxBlock = 64u << 20;
// Linux's lz4 legacy frame: blocks of at most 8 MiB decompressed.
constexpr uint32_t kLz4MaxBlock = 8u << 20;
constexpr uint32_t kLz4LegacyMagic = 0x184c2102;

uint32_t LoadLe32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // x86 host
}
uint32_t LoadBe32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
uint16_t LoadBe16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// The streaming libraries count in 32-bit units; the caller bounds both sizes below 4 GiB.
Decoded Gunzip(std::span<const uint8_t> in, Buffer& out) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return {Outcome::kNoMemory};  // gzip only
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&z, Z_FINISH);
  Decoded d{Outcome::kCorrupt, z.total_out};
  if (rc == Z_STREAM_END) {
    d.outcome = Outcome::kEnded;
  } else if (rc == Z_BUF_ERROR || rc == Z_OK) {
    d.outcome = z.avail_out == 0 ? Outcome::kOverflow : Outcome::kTruncated;
  } else if (rc == Z_MEM_ERROR) {
    d.outcome = Outcome::kNoMemory;
  }
  inflateEnd(&z);
  return d;
}

Decoded Bunzip2(std::span<const uint8_t> in, Buffer& out) {
  bz_stream bz{};
  if (BZ2_bzDecompressInit(&bz, 0, 0) != BZ_OK) return {Outcome::kNoMemory};
  bz.next_in = const_cast<char*>(reinterpret_cast<const char*>(in.data()));
  bz.avail_in = static_cast<unsigned>(in.size());
  bz.next_out = reinterpret_cast<char*>(out.data());
  bz.avail_out = static_cast<unsigned>(out.size());
  Decoded d{Outcome::kCorrupt};
  unsigned avail_in = bz.avail_in, avail_out = bz.avail_out;
  // BZ2_bzDecompress returns BZ_OK while it makes progress; loop until it stops.
  for (;;) {
    const int rc = BZ2_bzDecompress(&bz);
    if (rc == BZ_STREAM_END) {
      d.outcome = Outcome::kEnded;
    } else if (rc == BZ_OK) {
      if (bz.avail_out == 0) {
        d.outcome = Outcome::kOverflow;
      } else if (bz.avail_in == 0) {
        d.outcome = Outcome::kTruncated;
      } else if (bz.avail_in != avail_in || bz.avail_out != avail_out) {
        avail_in = bz.avail_in, avail_out = bz.avail_out;
        continue;  // progress: go on
      }            // else no progress with room on both sides: treated as corrupt, never a spin
    } else if (rc == BZ_MEM_ERROR) {
      d.outcome = Outcome::kNoMemory;
    }
    break;
  }
  d.produced = (uint64_t{bz.total_out_hi32} << 32) | bz.total_out_lo32;
  BZ2_bzDecompressEnd(&bz);
  return d;
}

// xz (lzma_stream_decoder) and lzma-alone (lzma_alone_decoder) share the stream loop.
Decoded Unlzma(std::span<const uint8_t> in, Buffer& out, bool xz) {
  lzma_stream s = LZMA_STREAM_INIT;
  const lzma_ret init =
      xz ? lzma_stream_decoder(&s, kLzmaMemLimit, 0) : lzma_alone_decoder(&s, kLzmaMemLimit);
  if (init != LZMA_OK) return {Outcome::kNoMemory};
  s.next_in = in.data();
  s.avail_in = in.size();
  s.next_out = out.data();
  s.avail_out = out.size();
  const lzma_ret rc = lzma_code(&s, LZMA_FINISH);
  Decoded d{Outcome::kCorrupt, s.total_out};
  switch (rc) {
    case LZMA_STREAM_END:
      d.outcome = Outcome::kEnded;
      break;
    case LZMA_OK:
    case LZMA_BUF_ERROR:  // no progress possible: out of input or of output space
      d.outcome = s.avail_out == 0 ? Outcome::kOverflow : Outcome::kTruncated;
      break;
    case LZMA_MEM_ERROR:
    case LZMA_MEMLIMIT_ERROR:
      d.outcome = Outcome::kNoMemory;
      break;
    default:  // LZMA_FORMAT_ERROR, LZMA_OPTIONS_ERROR, LZMA_DATA_ERROR
      break;
  }
  lzma_end(&s);
  return d;
}

// zstd decodes the whole input in one call into the buffer (no window buffer of its own);
// several frames are concatenated as zstd does.
Decoded Unzstd(std::span<const uint8_t> in, Buffer& out) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (dctx == nullptr) return {Outcome::kNoMemory};
  const size_t rc = ZSTD_decompressDCtx(dctx, out.data(), out.size(), in.data(), in.size());
  ZSTD_freeDCtx(dctx);
  if (!ZSTD_isError(rc)) return {Outcome::kEnded, rc};
  switch (ZSTD_getErrorCode(rc)) {
    case ZSTD_error_dstSize_tooSmall:
      return {Outcome::kOverflow};
    case ZSTD_error_srcSize_wrong:
      return {Outcome::kTruncated};
    case ZSTD_error_memory_allocation:
      return {Outcome::kNoMemory};
    default:
      return {Outcome::kCorrupt};
  }
}

// lzop's file format (big-endian fields): the 9-byte magic, a header whose optional fields
// depend on its version and flags and which ends in its own checksum, then blocks of
// (decompressed length, compressed length, the checksums the flags ask for, data), ended by a
// block of length 0. A block whose two lengths are equal is stored uncompressed (and has no
// checksum of its compressed form). LZO1X data carries no check of its own, so the checksums
// are verified: they are what tells a corrupt literal from a good one.
constexpr uint8_t kLzopMagic[9] = {0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a};
constexpr uint32_t kLzopAdler32D = 0x1, kLzopAdler32C = 0x2, kLzopExtraField = 0x40,
                   kLzopCrc32D = 0x100, kLzopCrc32C = 0x200, kLzopFilter = 0x800,
                   kLzopHeaderCrc32 = 0x1000;

// The checksums a block (or the header) carries, checked in lzop's order: adler32 then crc32.
bool LzopSumsMatch(const uint8_t* sums, bool adler, bool crc, const uint8_t* data, size_t len) {
  const auto n = static_cast<lzo_uint>(len);
  if (adler && LoadBe32(sums) != lzo_adler32(1, data, n)) return false;
  if (crc && LoadBe32(sums + (adler ? 4 : 0)) != lzo_crc32(0, data, n)) return false;
  return true;
}

Decoded Unlzop(std::span<const uint8_t> in, Buffer& out) {
  if (lzo_init() != LZO_E_OK) return {Outcome::kNoMemory};
  size_t pos = 0;
  auto need = [&](size_t n) { return in.size() - pos >= n; };
  if (!need(sizeof(kLzopMagic) + 7) || std::memcmp(in.data(), kLzopMagic, 9) != 0)
    return {Outcome::kCorrupt};
  pos = sizeof(kLzopMagic);
  const size_t header_start = pos;
  const uint16_t version = LoadBe16(&in[pos]);
  pos += 4;                         // version, library version
  if (version >= 0x0940) pos += 2;  // version needed to extract
  if (!need(2)) return {Outcome::kTruncated};
  const uint8_t method = in[pos++];
  if (method < 1 || method > 3) return {Outcome::kCorrupt};  // not an LZO1X method
  if (version >= 0x0940) ++pos;                              // level
  if (!need(4)) return {Outcome::kTruncated};
  const uint32_t flags = LoadBe32(&in[pos]);
  pos += 4;
  if (flags & kLzopExtraField) return {Outcome::kCorrupt};  // lzop never writes it
  size_t skip = 8;                                          // mode, mtime low
  if (flags & kLzopFilter) skip += 4;
  if (version >= 0x0940) skip += 4;  // mtime high
  if (!need(skip + 1)) return {Outcome::kTruncated};
  pos += skip;
  const size_t name_len = in[pos++];
  if (!need(name_len + 4)) return {Outcome::kTruncated};
  pos += name_len;
  const bool header_crc = (flags & kLzopHeaderCrc32) != 0;
  if (!LzopSumsMatch(&in[pos], !header_crc, header_crc, &in[header_start], pos - header_start))
    return {Outcome::kCorrupt};
  pos += 4;
  const bool adler_d = flags & kLzopAdler32D, crc_d = flags & kLzopCrc32D;
  const bool adler_c = flags & kLzopAdler32C, crc_c = flags & kLzopCrc32C;
  const size_t d_sums = (adler_d ? 4 : 0) + (crc_d ? 4 : 0);
  const size_t c_sums = (adler_c ? 4 : 0) + (crc_c ? 4 : 0);

  uint64_t produced = 0;
  for (;;) {
    if (!need(4)) return {Outcome::kTruncated, produced};
    const uint32_t dst_len = LoadBe32(&in[pos]);
    pos += 4;
    if (dst_len == 0) return {Outcome::kEnded, produced};
    if (dst_len > kLzoMaxBlock) return {Outcome::kCorrupt, produced};
    if (!need(4)) return {Outcome::kTruncated, produced};
    const uint32_t src_len = LoadBe32(&in[pos]);
    pos += 4;
    if (src_len == 0 || src_len > dst_len) return {Outcome::kCorrupt, produced};
    const bool stored = src_len == dst_len;
    const size_t sums = d_sums + (stored ? 0 : c_sums);
    if (!need(sums + src_len)) return {Outcome::kTruncated, produced};
    const uint8_t* d_sum = &in[pos];
    const uint8_t* c_sum = d_sum + d_sums;
    pos += sums;
    const uint8_t* data = &in[pos];
    if (!stored && !LzopSumsMatch(c_sum, adler_c, crc_c, data, src_len))
      return {Outcome::kCorrupt, produced};
    if (dst_len > out.size() - produced) return {Outcome::kOverflow, produced};
    uint8_t* dst = out.data() + produced;
    if (stored) {
      std::memcpy(dst, data, dst_len);
    } else {
      lzo_uint out_len = dst_len;
      const int rc = lzo1x_decompress_safe(data, src_len, dst, &out_len, nullptr);
      if (rc != LZO_E_OK || out_len != dst_len) return {Outcome::kCorrupt, produced};
    }
    if (!LzopSumsMatch(d_sum, adler_d, crc_d, dst, dst_len)) return {Outcome::kCorrupt, produced};
    pos += src_len;
    produced += dst_len;
  }
}

// lz4's legacy frame (`lz4 -l`, what Linux uses): the magic, then blocks of (little-endian
// compressed length, data) to the end of the input; the magic again starts a concatenated
// frame.
Decoded Unlz4(std::span<const uint8_t> in, Buffer& out) {
  if (in.size() < 4 || LoadLe32(in.data()) != kLz4LegacyMagic) return {Outcome::kCorrupt};
  size_t pos = 4;
  uint64_t produced = 0;
  const uint32_t max_chunk = static_cast<uint32_t>(LZ4_compressBound(kLz4MaxBlock));
  while (pos < in.size()) {
    if (in.size() - pos < 4) return {Outcome::kTruncated, produced};
    const uint32_t chunk = LoadLe32(&in[pos]);
    pos += 4;
    if (chunk == kLz4LegacyMagic) continue;
    if (chunk == 0 || chunk > max_chunk) return {Outcome::kCorrupt, produced};
    if (chunk > in.size() - pos) return {Outcome::kTruncated, produced};
    const uint64_t room = out.size() - produced;
    if (room == 0) return {Outcome::kOverflow, produced};
    const int capacity = static_cast<int>(std::min<uint64_t>(room, kLz4MaxBlock));
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(&in[pos]),
                                      reinterpret_cast<char*>(out.data() + produced),
                                      static_cast<int>(chunk), capacity);
    // A block that needs more room than is left looks corrupt to LZ4 as well.
    if (n < 0) return {room < kLz4MaxBlock ? Outcome::kOverflow : Outcome::kCorrupt, produced};
    pos += chunk;
    produced += static_cast<uint64_t>(n);
  }
  return {Outcome::kEnded, produced};
}

}  // namespace

const char* CompressionName(Compression c) {
  switch (c) {
    case Compression::kGzip:
      return "gzip";
    case Compression::kBzip2:
      return "bzip2";
    case Compression::kXz:
      return "xz";
    case Compression::kLzma:
      return "lzma";
    case Compression::kLzo:
      return "lzo";
    case Compression::kLz4:
      return "lz4";
    case Compression::kZstd:
      return "zstd";
    case Compression::kNone:
      break;
  }
  return "none";
}

Compression DetectCompression(std::span<const uint8_t> p) {
  auto starts = [p](std::initializer_list<uint8_t> magic) {
    return p.size() >= magic.size() && std::equal(magic.begin(), magic.end(), p.begin());
  };
  if (starts({0x1f, 0x8b})) return Compression::kGzip;
  if (starts({'B', 'Z', 'h'})) return Compression::kBzip2;
  if (starts({0xfd, '7', 'z', 'X', 'Z', 0x00})) return Compression::kXz;
  if (starts({0x28, 0xb5, 0x2f, 0xfd})) return Compression::kZstd;
  if (starts({0x5d, 0x00})) return Compression::kLzma;  // lzma-alone: lc/lp/pb 3/0/2
  if (starts({0x89, 'L', 'Z', 'O', 0x00})) return Compression::kLzo;
  if (starts({0x02, 0x21, 0x4c, 0x18})) return Compression::kLz4;
  return Compression::kNone;
}

Result<Buffer> DecompressKernelPayload(std::span<const uint8_t> payload,
                                       const DecompressLimits& limits) {
  const Compression format = DetectCompression(payload);
  if (format == Compression::kNone)
    return Fail(XEN_EINVAL,
                "bzImage payload: unknown compression (not gzip, bzip2, xz, lzma, lzo, lz4 or "
                "zstd)");
  if (payload.size() < 8) return Fail(XEN_EINVAL, "bzImage payload: too short");
  // Both the payload and the output must fit the libraries' 32-bit counters.
  if (payload.size() > UINT32_MAX) return Fail(XEN_E2BIG, "bzImage payload: larger than 4 GiB");
  const uint64_t declared = LoadLe32(payload.data() + payload.size() - 4);
  if (declared == 0) return Fail(XEN_EINVAL, "bzImage payload: declares a size of 0");
  if (declared > limits.max_output || declared > UINT32_MAX)
    return Fail(XEN_E2BIG, "bzImage payload: declared size over the 1 GiB limit");
  const uint64_t allowance =
      std::max(limits.min_allowance, limits.max_ratio * static_cast<uint64_t>(payload.size()));
  if (declared > allowance)
    return Fail(XEN_E2BIG,
                "bzImage payload: declared size implausibly large for the compressed data");

  Buffer out = TRY(Buffer::Allocate(static_cast<size_t>(declared)));
  // gzip's own trailer is the size field; every other format has it appended after the stream.
  const auto stream = format == Compression::kGzip ? payload : payload.first(payload.size() - 4);
  Decoded d{Outcome::kCorrupt};
  const Messages* m = nullptr;
  switch (format) {
    case Compression::kGzip:
      d = Gunzip(stream, out), m = &kGzipMessages;
      break;
    case Compression::kBzip2:
      d = Bunzip2(stream, out), m = &kBzip2Messages;
      break;
    case Compression::kXz:
      d = Unlzma(stream, out, true), m = &kXzMessages;
      break;
    case Compression::kLzma:
      d = Unlzma(stream, out, false), m = &kLzmaMessages;
      break;
    case Compression::kLzo:
      d = Unlzop(stream, out), m = &kLzoMessages;
      break;
    case Compression::kLz4:
      d = Unlz4(stream, out), m = &kLz4Messages;
      break;
    case Compression::kZstd:
      d = Unzstd(stream, out), m = &kZstdMessages;
      break;
    case Compression::kNone:
      break;
  }
  switch (d.outcome) {
    case Outcome::kEnded:
      if (d.produced != declared) return Fail(XEN_EINVAL, m->short_output);
      return out;
    case Outcome::kCorrupt:
      return Fail(XEN_EINVAL, m->corrupt);
    case Outcome::kTruncated:
      return Fail(XEN_EINVAL, m->truncated);
    case Outcome::kOverflow:
      return Fail(XEN_EINVAL, m->overflow);
    case Outcome::kNoMemory:
      return Fail(XEN_ENOMEM, m->no_memory);
  }
  return Fail(XEN_EINVAL, m->corrupt);
}

}  // namespace xenkvm::boot
