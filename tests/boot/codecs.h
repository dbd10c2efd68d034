// Test-only compressors: a payload packed as Linux's build packs a bzImage's vmlinux
// (arch/x86/boot/compressed/Makefile, scripts/Makefile.lib): each format through the same
// Debian library the loader decodes it with, then (for all but gzip, whose ISIZE trailer is the
// same field) the decompressed size appended as 4 little-endian bytes.
#pragma once

#include <bzlib.h>
#include <lz4.h>
#include <lzma.h>
#include <lzo/lzo1x.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "boot/decompress.h"

namespace xenkvm::boot::test {

using ByteVec = std::vector<uint8_t>;

inline void AppendLe32(ByteVec& v, uint32_t x) {
  for (int i = 0; i < 4; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
inline void AppendBe32(ByteVec& v, uint32_t x) {
  for (int i = 3; i >= 0; --i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
inline void AppendBe16(ByteVec& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x));
}

// Some structure (so every format compresses it) and some noise (so it's not trivial).
inline ByteVec SamplePayload(size_t size) {
  ByteVec out(size);
  uint32_t x = 12345;
  for (size_t i = 0; i < size; ++i) {
    x = x * 1103515245 + 12345;
    out[i] = (i % 512) < 384 ? static_cast<uint8_t>("xenkvm boots linux "[i % 19])
                             : static_cast<uint8_t>(x >> 24);
  }
  return out;
}

inline ByteVec Gzip(const ByteVec& in) {
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  ByteVec out(deflateBound(&z, static_cast<uLong>(in.size())) + 64);
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;  // ends in ISIZE: no size to append
}

inline ByteVec Bzip2(const ByteVec& in) {
  ByteVec out(in.size() + in.size() / 100 + 700);
  auto len = static_cast<unsigned>(out.size());
  BZ2_bzBuffToBuffCompress(reinterpret_cast<char*>(out.data()), &len,
                           const_cast<char*>(reinterpret_cast<const char*>(in.data())),
                           static_cast<unsigned>(in.size()), 9, 0, 0);
  out.resize(len);
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

// As scripts/xz_wrap.sh: the x86 BCJ filter, LZMA2, CRC32 check.
inline ByteVec Xz(const ByteVec& in) {
  lzma_options_lzma opt;
  lzma_lzma_preset(&opt, 6);
  lzma_filter filters[] = {
      {LZMA_FILTER_X86, nullptr}, {LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  ByteVec out(lzma_stream_buffer_bound(in.size()));
  size_t pos = 0;
  if (lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(),
                                out.data(), &pos, out.size()) != LZMA_OK)
    return {};
  out.resize(pos);
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

// lzma-alone (`lzma -9` writes it): its header says "size unknown", the stream has an end mark.
inline ByteVec Lzma(const ByteVec& in) {
  lzma_options_lzma opt;
  lzma_lzma_preset(&opt, 6);
  lzma_stream s = LZMA_STREAM_INIT;
  if (lzma_alone_encoder(&s, &opt) != LZMA_OK) return {};
  ByteVec out(in.size() + in.size() / 2 + 4096);
  s.next_in = in.data();
  s.avail_in = in.size();
  s.next_out = out.data();
  s.avail_out = out.size();
  while (lzma_code(&s, LZMA_FINISH) == LZMA_OK) {
  }
  out.resize(s.total_out);
  lzma_end(&s);
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

// lzop's file format as lzop 1.04 writes it (`lzop -9`: LZO1X-999, adler32 of each block's
// decompressed and compressed data), blocks of `block` bytes.
inline ByteVec Lzop(const ByteVec& in, size_t block = 256 * 1024) {
  lzo_init();
  ByteVec out = {0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a};
  const size_t header_start = out.size();
  AppendBe16(out, 0x1040);                  // version
  AppendBe16(out, 0x20a0);                  // library version
  AppendBe16(out, 0x0940);                  // version needed to extract
  out.push_back(3);                         // method: LZO1X-999
  out.push_back(9);                         // level
  AppendBe32(out, 0x1 | 0x2 | 0x03000000);  // adler32 D and C; "OS" byte as lzop sets it
  AppendBe32(out, 0100644);                 // mode
  AppendBe32(out, 0);                       // mtime low
  AppendBe32(out, 0);                       // mtime high
  out.push_back(0);                         // no file name
  AppendBe32(out, lzo_adler32(1, out.data() + header_start, out.size() - header_start));
  std::vector<uint8_t> work(LZO1X_999_MEM_COMPRESS);
  for (size_t at = 0; at < in.size(); at += block) {
    const size_t n = std::min(block, in.size() - at);
    ByteVec c(n + n / 16 + 64 + 3);
    lzo_uint clen = c.size();
    lzo1x_999_compress(in.data() + at, n, c.data(), &clen, work.data());
    AppendBe32(out, static_cast<uint32_t>(n));
    const bool stored = clen >= n;
    AppendBe32(out, static_cast<uint32_t>(stored ? n : clen));
    AppendBe32(out, lzo_adler32(1, in.data() + at, n));
    if (stored) {
      out.insert(out.end(), in.begin() + static_cast<ptrdiff_t>(at),
                 in.begin() + static_cast<ptrdiff_t>(at + n));
    } else {
      AppendBe32(out, lzo_adler32(1, c.data(), clen));
      out.insert(out.end(), c.begin(), c.begin() + static_cast<ptrdiff_t>(clen));
    }
  }
  AppendBe32(out, 0);  // end of blocks
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

// lz4's legacy frame (`lz4 -l`): its magic, then blocks (Linux's: 8 MiB of input each).
inline ByteVec Lz4(const ByteVec& in, size_t block = 8u << 20) {
  ByteVec out;
  AppendLe32(out, 0x184c2102);
  for (size_t at = 0; at < in.size(); at += block) {
    const size_t n = std::min(block, in.size() - at);
    ByteVec c(static_cast<size_t>(LZ4_compressBound(static_cast<int>(n))));
    const int clen = LZ4_compress_default(reinterpret_cast<const char*>(in.data() + at),
                                          reinterpret_cast<char*>(c.data()), static_cast<int>(n),
                                          static_cast<int>(c.size()));
    AppendLe32(out, static_cast<uint32_t>(clen));
    out.insert(out.end(), c.begin(), c.begin() + clen);
  }
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

// As the zstd tool writes it (`zstd -22 --ultra`): with the frame's content checksum.
inline ByteVec Zstd(const ByteVec& in) {
  ByteVec out(ZSTD_compressBound(in.size()));
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 19);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  const size_t n = ZSTD_compress2(cctx, out.data(), out.size(), in.data(), in.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(n)) return {};
  out.resize(n);
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

inline ByteVec Compress(Compression c, const ByteVec& in) {
  switch (c) {
    case Compression::kGzip:
      return Gzip(in);
    case Compression::kBzip2:
      return Bzip2(in);
    case Compression::kXz:
      return Xz(in);
    case Compression::kLzma:
      return Lzma(in);
    case Compression::kLzo:
      return Lzop(in);
    case Compression::kLz4:
      return Lz4(in);
    case Compression::kZstd:
      return Zstd(in);
    case Compression::kNone:
      break;
  }
  return in;
}

inline constexpr Compression kAllFormats[] = {
    Compression::kGzip, Compression::kBzip2, Compression::kXz,  Compression::kLzma,
    Compression::kLzo,  Compression::kLz4,   Compression::kZstd};

// Test names for parameterised suites: gzip, xz, ...
inline std::string FormatName(const ::testing::TestParamInfo<Compression>& p) {
  return CompressionName(p.param);
}

}  // namespace xenkvm::boot::test
