// The live-migration stream (docs/migration.md): frames both ways over one byte stream, each
// laid out as a snapshot section is (format.h): a 4-character tag, reserved 0, a 64-bit length,
// the payload, and a CRC-32 of all of it. The source sends HELO (the machine's shape and host),
// PAGE batches of guest RAM while the guest runs, then STAT: the paused guest as one snapshot
// file whose RAM section holds only the pages still dirty, loaded through the same checked
// Reader as a file. The destination answers REDY (loaded) or FAIL (one line); the source then
// sends GO!! (it will not resume) and the destination answers RSMD once the guest runs there.
//
// A stream is hostile both ways: every frame's length is bounded by the receiver before it
// reads, every checksum checked before a payload is used, every wait bounded by a timeout.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "abi/result.h"
#include "snapshot/format.h"

namespace xenkvm::snapshot {

inline constexpr std::array<char, 8> kStreamMagic = {'X', 'E', 'N', 'K', 'V', 'M', 'M', 'G'};
// Bumped whenever a frame's layout changes (the STAT snapshot has its own kFormatVersion).
inline constexpr uint32_t kStreamVersion = 1;

inline constexpr uint32_t kHelloFrame = MakeTag("HELO");    // source: magic, version, host, shape
inline constexpr uint32_t kPagesFrame = MakeTag("PAGE");    // source: a batch of RAM pages
inline constexpr uint32_t kStateFrame = MakeTag("STAT");    // source: the paused guest
inline constexpr uint32_t kReadyFrame = MakeTag("REDY");    // destination: state loaded
inline constexpr uint32_t kFailFrame = MakeTag("FAIL");     // destination: refused (one line)
inline constexpr uint32_t kGoFrame = MakeTag("GO!!");       // source: committed, run it there
inline constexpr uint32_t kResumedFrame = MakeTag("RSMD");  // destination: the guest runs

struct Frame {
  uint32_t tag = 0;
  std::vector<std::byte> payload;
};

// A connected stream. Owns its descriptors: one for both ways (a socket), or two (pipes).
// Threads: one user at a time.
class Channel {
 public:
  Channel(int read_fd, int write_fd, pid_t child = -1);
  Channel(Channel&& other) noexcept;
  Channel& operator=(Channel&&) = delete;
  ~Channel();  // closes; an exec: child is reaped if it ends within a second, else left running

  Result<> Send(uint32_t tag, std::span<const std::byte> payload);
  // The next frame, its payload at most max_length bytes. Each wait for more bytes is bounded
  // by idle_timeout. A frame whose tag is `kFailFrame` is returned like any other.
  Result<Frame> Receive(uint64_t max_length, std::chrono::milliseconds idle_timeout);
  // How long Send waits for a receiver that does not read.
  void set_send_timeout(std::chrono::milliseconds t) { send_timeout_ = t; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  Result<> WriteAll(std::span<const std::byte> bytes);
  // Exactly out.size() bytes; `inside` says whether a frame has begun (for the error's words).
  Result<> ReadAll(std::span<std::byte> out, std::chrono::milliseconds idle_timeout, bool inside);

  int read_fd_;
  int write_fd_;
  pid_t child_;
  std::chrono::milliseconds send_timeout_{60000};
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
};

// ---- HELO ----
struct Hello {
  HostFacts facts;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
};
std::vector<std::byte> EncodeHello(const Hello& hello);
// Checks the magic and the stream version (the host facts are the caller's to check).
Result<Hello> DecodeHello(std::span<const std::byte> payload);

// ---- PAGE: u32 count, u32 reserved 0, count x u64 (page number | kZeroPage), then the 4 KiB
// of each page not marked zero, in the same order. ----
inline constexpr uint32_t kMaxBatchPages = 256;
inline constexpr uint64_t kZeroPage = uint64_t{1} << 63;  // the page is all zero: no bytes sent
class PageBatch {
 public:
  // `page` is 4 KiB of guest RAM; a page of zeros travels as a flag only.
  void Add(uint64_t page_number, std::span<const std::byte, 4096> page);
  uint32_t count() const { return uint32_t(entries_.size()); }
  bool full() const { return entries_.size() == kMaxBatchPages; }
  std::vector<std::byte> Encode() const;
  void Clear();

 private:
  std::vector<uint64_t> entries_;
  std::vector<std::byte> data_;
};
// Checks the whole batch (count, page numbers below ram_pages, the length) before calling
// `apply` for each page with its bytes, or an empty span for a page of zeros.
Result<> DecodePages(std::span<const std::byte> payload, uint64_t ram_pages,
                     const std::function<void(uint64_t, std::span<const std::byte>)>& apply);

}  // namespace xenkvm::snapshot
