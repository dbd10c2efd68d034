// The snapshot file: one file holding a whole saved guest (docs/snapshots.md). A fixed header
// (magic, format version, the facts of the host that wrote it that must match where it
// resumes, its own CRC-32), then sections, each a tag, a length, the payload and a CRC-32 of
// header and payload, closed by an END section that counts the sections before it. The layout
// is ours (no Xen or QEMU stream format): every field little-endian.
//
// A snapshot file is hostile. Reader::Open checks all of it (magic, version, every checksum,
// every length against the file's size, the END count, nothing after END, the host facts)
// before anything is restored, and answers any fault with one clear line.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "abi/result.h"
#include "snapshot/codec.h"

namespace xenkvm::snapshot {

inline constexpr std::array<char, 8> kMagic = {'X', 'E', 'N', 'K', 'V', 'M', 'S', 'N'};
// Bumped whenever any section's layout changes: a file of another version is refused whole.
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint32_t kHeaderSize = 64;
inline constexpr uint32_t kSectionHeaderSize = 16;  // tag, reserved, length
inline constexpr uint32_t kSectionTrailerSize = 4;  // CRC-32
inline constexpr uint32_t kMaxSections = 4096;

// A section tag: four ASCII characters, first in the lowest byte ("EVTC" reads as such in a dump).
constexpr uint32_t MakeTag(std::string_view four) {
  return uint32_t(uint8_t(four[0])) | uint32_t(uint8_t(four[1])) << 8 |
         uint32_t(uint8_t(four[2])) << 16 | uint32_t(uint8_t(four[3])) << 24;
}
inline constexpr uint32_t kEndTag = MakeTag("END!");

// What must be the same on the host that resumes a snapshot: the CPU vendor (vCPU state and
// CPUID are vendor-specific), the page size, and XSAVE: the features the guest may have
// enabled must all exist here, in an area no larger than this host's.
struct HostFacts {
  std::array<char, 12> cpu_vendor{};
  uint32_t page_size = 0;
  uint64_t xsave_features = 0;  // CPUID.(EAX=0DH,ECX=0):EDX:EAX
  uint32_t xsave_size = 0;      // CPUID.(EAX=0DH,ECX=0):ECX, bytes for all of them

  bool operator==(const HostFacts&) const = default;
};
HostFacts CurrentHostFacts();
// Whether a snapshot written on `saved` may resume on `here`; the error names what differs.
Result<> CheckHostFacts(const HostFacts& saved, const HostFacts& here);

uint32_t Crc32(uint32_t crc, std::span<const std::byte> data);

// ---- writing ----
// Where the bytes go: a file, or memory (tests, the fuzzer's seeds).
class Sink {
 public:
  virtual ~Sink() = default;
  virtual Result<> Write(std::span<const std::byte> bytes) = 0;
};
class FdSink final : public Sink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  Result<> Write(std::span<const std::byte> bytes) override;

 private:
  int fd_;
};
class VectorSink final : public Sink {
 public:
  Result<> Write(std::span<const std::byte> bytes) override {
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
    return {};
  }
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

class Writer {
 public:
  Writer(Sink& sink, const HostFacts& facts);  // call Begin() first
  Result<> Begin();
  // A whole section at once.
  Result<> Section(uint32_t tag, std::span<const std::byte> payload);
  // A section written in parts (guest RAM): its length up front, then exactly that many bytes.
  Result<> BeginSection(uint32_t tag, uint64_t length);
  Result<> Append(std::span<const std::byte> bytes);
  Result<> EndSection();
  // The END section. The file is complete only after this.
  Result<> Finish();

 private:
  Sink& sink_;
  const HostFacts facts_;
  uint32_t sections_ = 0;
  bool open_ = false;  // inside BeginSection..EndSection
  uint64_t left_ = 0;  // bytes the open section still needs
  uint32_t crc_ = 0;
};

// ---- reading ----
class Source {
 public:
  virtual ~Source() = default;
  virtual uint64_t size() const = 0;
  // Exactly out.size() bytes at offset (the caller checked the range against size()).
  virtual Result<> ReadAt(uint64_t offset, std::span<std::byte> out) const = 0;
};
class FdSource final : public Source {
 public:
  // The size is taken now: a file that shrinks later reads as truncated.
  static Result<FdSource> Open(int fd);
  uint64_t size() const override { return size_; }
  Result<> ReadAt(uint64_t offset, std::span<std::byte> out) const override;

 private:
  FdSource(int fd, uint64_t size) : fd_(fd), size_(size) {}
  int fd_;
  uint64_t size_;
};
class SpanSource final : public Source {
 public:
  explicit SpanSource(std::span<const std::byte> bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  Result<> ReadAt(uint64_t offset, std::span<std::byte> out) const override;

 private:
  std::span<const std::byte> bytes_;
};

struct SectionInfo {
  uint32_t tag = 0;
  uint64_t offset = 0;  // of the payload in the file
  uint64_t length = 0;
};

class Reader {
 public:
  // Checks the whole file (see the top of this file) and indexes its sections. `source`
  // outlives the Reader.
  static Result<Reader> Open(const Source& source, const HostFacts& here);

  const HostFacts& facts() const { return facts_; }
  const std::vector<SectionInfo>& sections() const { return sections_; }
  // The only section with this tag; a missing or repeated one is corrupt.
  Result<SectionInfo> Only(uint32_t tag) const;
  std::vector<SectionInfo> All(uint32_t tag) const;
  // A section's payload, its checksum verified again (the file may have changed since Open).
  Result<std::vector<std::byte>> Load(const SectionInfo& section) const;
  // Part of a section's payload, unverified: for guest RAM, checked whole by Open.
  Result<> ReadPart(const SectionInfo& section, uint64_t offset, std::span<std::byte> out) const;

 private:
  Reader(const Source& source, HostFacts facts, std::vector<SectionInfo> sections)
      : source_(&source), facts_(facts), sections_(std::move(sections)) {}
  const Source* source_;
  HostFacts facts_;
  std::vector<SectionInfo> sections_;
};

}  // namespace xenkvm::snapshot
