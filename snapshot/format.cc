// The snapshot file container (see format.h).
#include "snapshot/format.h"

#include <cpuid.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace xenkvm::snapshot {

namespace {

constexpr uint32_t kHeaderCrcOffset = kHeaderSize - 4;
// Bytes read at a time while checking a section (guest RAM sections are large).
constexpr size_t kCheckChunk = 1 << 20;

std::vector<std::byte> EncodeHeader(const HostFacts& facts) {
  Encoder e;
  e.Raw(std::as_bytes(std::span(kMagic)));
  e.U32(kFormatVersion);
  e.U32(kHeaderSize);
  e.Raw(std::as_bytes(std::span(facts.cpu_vendor)));
  e.U32(facts.page_size);
  e.U64(facts.xsave_features);
  e.U32(facts.xsave_size);
  while (e.bytes().size() < kHeaderCrcOffset) e.U8(0);
  e.U32(Crc32(0, e.bytes()));
  return e.Take();
}

std::array<std::byte, kSectionHeaderSize> SectionHeader(uint32_t tag, uint64_t length) {
  Encoder e;
  e.U32(tag);
  e.U32(0);
  e.U64(length);
  std::array<std::byte, kSectionHeaderSize> out{};
  std::copy(e.bytes().begin(), e.bytes().end(), out.begin());
  return out;
}

}  // namespace

uint32_t Crc32(uint32_t crc, std::span<const std::byte> data) {
  uLong value = crc;
  while (!data.empty()) {
    const size_t n = std::min<size_t>(data.size(), 1u << 30);
    value = ::crc32(value, reinterpret_cast<const Bytef*>(data.data()), uInt(n));
    data = data.subspan(n);
  }
  return uint32_t(value);
}

HostFacts CurrentHostFacts() {
  HostFacts facts;
  facts.page_size = uint32_t(::sysconf(_SC_PAGESIZE));
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx)) {
    std::memcpy(&facts.cpu_vendor[0], &ebx, 4);
    std::memcpy(&facts.cpu_vendor[4], &edx, 4);
    std::memcpy(&facts.cpu_vendor[8], &ecx, 4);
    if (eax >= 0xd) {
      __cpuid_count(0xd, 0, eax, ebx, ecx, edx);
      facts.xsave_features = uint64_t(edx) << 32 | eax;
      facts.xsave_size = ecx;
    }
  }
  return facts;
}

Result<> CheckHostFacts(const HostFacts& saved, const HostFacts& here) {
  if (saved.cpu_vendor != here.cpu_vendor)
    return Corrupt("snapshot was taken on a host with another CPU vendor");
  if (saved.page_size != here.page_size)
    return Corrupt("snapshot was taken on a host with another page size");
  if ((saved.xsave_features & ~here.xsave_features) != 0 || saved.xsave_size > here.xsave_size)
    return Corrupt("snapshot was taken on a host with XSAVE features this host lacks");
  return {};
}

// ---- writing ----

Result<> FdSink::Write(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return HostFail(n < 0 ? errno : EIO, "write snapshot file");
    bytes = bytes.subspan(size_t(n));
  }
  return {};
}

Writer::Writer(Sink& sink, const HostFacts& facts) : sink_(sink), facts_(facts) {}

Result<> Writer::Begin() { return sink_.Write(EncodeHeader(facts_)); }

Result<> Writer::Section(uint32_t tag, std::span<const std::byte> payload) {
  TRY(BeginSection(tag, payload.size()));
  TRY(Append(payload));
  return EndSection();
}

Result<> Writer::BeginSection(uint32_t tag, uint64_t length) {
  if (open_ || sections_ >= kMaxSections - 1) return UsageFail("snapshot: section out of order");
  const auto header = SectionHeader(tag, length);
  TRY(sink_.Write(header));
  open_ = true;
  left_ = length;
  crc_ = Crc32(0, header);
  return {};
}

Result<> Writer::Append(std::span<const std::byte> bytes) {
  if (!open_ || bytes.size() > left_) return UsageFail("snapshot: section longer than announced");
  TRY(sink_.Write(bytes));
  crc_ = Crc32(crc_, bytes);
  left_ -= bytes.size();
  return {};
}

Result<> Writer::EndSection() {
  if (!open_ || left_ != 0) return UsageFail("snapshot: section shorter than announced");
  Encoder e;
  e.U32(crc_);
  TRY(sink_.Write(e.bytes()));
  open_ = false;
  ++sections_;
  return {};
}

Result<> Writer::Finish() {
  Encoder count;
  count.U32(sections_);
  count.U32(0);
  return Section(kEndTag, count.bytes());
}

// ---- reading ----

Result<FdSource> FdSource::Open(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return HostFail(errno, "stat snapshot file");
  if (!S_ISREG(st.st_mode)) return UsageFail("snapshot is not a regular file");
  return FdSource(fd, uint64_t(st.st_size));
}

Result<> FdSource::ReadAt(uint64_t offset, std::span<std::byte> out) const {
  while (!out.empty()) {
    const ssize_t n = ::pread(fd_, out.data(), out.size(), off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return HostFail(errno, "read snapshot file");
    if (n == 0) return Corrupt("snapshot file is truncated");
    out = out.subspan(size_t(n));
    offset += uint64_t(n);
  }
  return {};
}

Result<> SpanSource::ReadAt(uint64_t offset, std::span<std::byte> out) const {
  if (offset > bytes_.size() || out.size() > bytes_.size() - offset)
    return Corrupt("snapshot file is truncated");
  std::memcpy(out.data(), bytes_.data() + offset, out.size());
  return {};
}

Result<Reader> Reader::Open(const Source& source, const HostFacts& here) {
  const uint64_t size = source.size();
  std::array<std::byte, kHeaderSize> header{};
  if (size < 8) return Corrupt("not a xenkvm snapshot file (too short)");
  TRY(source.ReadAt(0, std::span(header).first(std::min<uint64_t>(size, kHeaderSize))));
  if (std::memcmp(header.data(), kMagic.data(), kMagic.size()) != 0)
    return Corrupt("not a xenkvm snapshot file (bad magic)");
  if (size < kHeaderSize) return Corrupt("snapshot file is truncated (in its header)");
  Decoder d(header);
  std::array<char, 8> magic{};
  d.Raw(std::as_writable_bytes(std::span(magic)));
  const uint32_t version = d.U32();
  const uint32_t header_size = d.U32();
  if (version != kFormatVersion)
    return Corrupt("snapshot file has another format version (written by another xenkvm)");
  HostFacts facts;
  d.Raw(std::as_writable_bytes(std::span(facts.cpu_vendor)));
  facts.page_size = d.U32();
  facts.xsave_features = d.U64();
  facts.xsave_size = d.U32();
  const std::span<const std::byte> whole(header);
  const uint32_t stored_crc = Decoder(whole.subspan(kHeaderCrcOffset)).U32();
  if (header_size != kHeaderSize || stored_crc != Crc32(0, whole.first(kHeaderCrcOffset)))
    return Corrupt("snapshot file is corrupt (header checksum mismatch)");

  std::vector<SectionInfo> sections;
  std::vector<std::byte> chunk;
  uint64_t offset = kHeaderSize;
  for (;;) {
    if (sections.size() >= kMaxSections) return Corrupt("snapshot file has too many sections");
    if (size - offset < kSectionHeaderSize) return Corrupt("snapshot file is truncated");
    std::array<std::byte, kSectionHeaderSize> sh{};
    TRY(source.ReadAt(offset, sh));
    Decoder sd(sh);
    SectionInfo info;
    info.tag = sd.U32();
    const uint32_t reserved = sd.U32();
    info.length = sd.U64();
    info.offset = offset + kSectionHeaderSize;
    if (info.length > size - info.offset || size - info.offset - info.length < kSectionTrailerSize)
      return Corrupt("snapshot file is truncated");
    uint32_t crc = Crc32(0, sh);
    for (uint64_t done = 0; done < info.length;) {
      chunk.resize(std::min<uint64_t>(kCheckChunk, info.length - done));
      TRY(source.ReadAt(info.offset + done, chunk));
      crc = Crc32(crc, chunk);
      done += chunk.size();
    }
    std::array<std::byte, kSectionTrailerSize> trailer{};
    TRY(source.ReadAt(info.offset + info.length, trailer));
    if (Decoder(trailer).U32() != crc || reserved != 0)
      return Corrupt("snapshot file is corrupt (section checksum mismatch)");
    offset = info.offset + info.length + kSectionTrailerSize;
    if (info.tag == kEndTag) {
      chunk.resize(std::min<uint64_t>(info.length, 16));
      TRY(source.ReadAt(info.offset, chunk));
      Decoder end(chunk);
      const uint32_t count = end.U32();
      (void)end.U32();
      if (!end.Finish() || count != sections.size())
        return Corrupt("snapshot file is corrupt (bad END section)");
      if (offset != size) return Corrupt("snapshot file has bytes after its END section");
      break;
    }
    sections.push_back(info);
  }
  TRY(CheckHostFacts(facts, here));
  return Reader(source, facts, std::move(sections));
}

Result<SectionInfo> Reader::Only(uint32_t tag) const {
  std::vector<SectionInfo> found = All(tag);
  if (found.empty()) return Corrupt("snapshot file lacks a section this version needs");
  if (found.size() > 1) return Corrupt("snapshot file repeats a section");
  return found[0];
}

std::vector<SectionInfo> Reader::All(uint32_t tag) const {
  std::vector<SectionInfo> found;
  for (const SectionInfo& s : sections_)
    if (s.tag == tag) found.push_back(s);
  return found;
}

Result<std::vector<std::byte>> Reader::Load(const SectionInfo& section) const {
  std::vector<std::byte> payload(section.length);
  TRY(source_->ReadAt(section.offset, payload));
  std::array<std::byte, kSectionTrailerSize> trailer{};
  TRY(source_->ReadAt(section.offset + section.length, trailer));
  const uint32_t crc = Crc32(Crc32(0, SectionHeader(section.tag, section.length)), payload);
  if (Decoder(trailer).U32() != crc)
    return Corrupt("snapshot file changed while it was read (section checksum mismatch)");
  return payload;
}

Result<> Reader::ReadPart(const SectionInfo& section, uint64_t offset,
                          std::span<std::byte> out) const {
  if (offset > section.length || out.size() > section.length - offset)
    return Corrupt("snapshot section is truncated");
  return source_->ReadAt(section.offset + offset, out);
}

}  // namespace xenkvm::snapshot
