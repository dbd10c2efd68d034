// The live-migration stream; see stream.h.
#include "snapshot/stream.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace xenkvm::snapshot {

namespace {
constexpr size_t kReadChunk = 1 << 20;  // a lying length never sizes a buffer at once
constexpr auto kChildExitWait = std::chrono::seconds(1);

void MakeNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int PollMs(std::chrono::milliseconds t) {
  return int(std::clamp<int64_t>(t.count(), 0, INT32_MAX));
}
}  // namespace

Channel::Channel(int read_fd, int write_fd, pid_t child)
    : read_fd_(read_fd), write_fd_(write_fd), child_(child) {
  MakeNonBlocking(read_fd_);
  if (write_fd_ != read_fd_) MakeNonBlocking(write_fd_);
}

Channel::Channel(Channel&& other) noexcept
    : read_fd_(std::exchange(other.read_fd_, -1)),
      write_fd_(std::exchange(other.write_fd_, -1)),
      child_(std::exchange(other.child_, -1)),
      send_timeout_(other.send_timeout_),
      bytes_sent_(other.bytes_sent_),
      bytes_received_(other.bytes_received_) {}

Channel::~Channel() {
  if (read_fd_ >= 0) ::close(read_fd_);
  if (write_fd_ >= 0 && write_fd_ != read_fd_) ::close(write_fd_);
  if (child_ <= 0) return;
  // A command that failed sees its stdin end and leaves: reap it. One still running is left
  // alone, never killed: after a migration it carries the guest's new home (ssh to it).
  const auto give_up = std::chrono::steady_clock::now() + kChildExitWait;
  while (::waitpid(child_, nullptr, WNOHANG) == 0 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

Result<> Channel::WriteAll(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    // send() with MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE; pipes use write().
    ssize_t n = ::send(write_fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK) n = ::write(write_fd_, bytes.data(), bytes.size());
    if (n > 0) {
      bytes = bytes.subspan(size_t(n));
      bytes_sent_ += uint64_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return HostFail(errno, "write the migration stream");
    pollfd p{write_fd_, POLLOUT, 0};
    const int ready = ::poll(&p, 1, PollMs(send_timeout_));
    if (ready < 0 && errno != EINTR) return HostFail(errno, "poll the migration stream");
    if (ready == 0) return HostFail(ETIMEDOUT, "migration stream: the other side stopped reading");
  }
  return {};
}

Result<> Channel::ReadAll(std::span<std::byte> out, std::chrono::milliseconds idle_timeout,
                          bool inside) {
  while (!out.empty()) {
    const ssize_t n = ::read(read_fd_, out.data(), out.size());
    if (n > 0) {
      out = out.subspan(size_t(n));
      bytes_received_ += uint64_t(n);
      inside = true;
      continue;
    }
    if (n == 0) {
      return inside ? Corrupt("migration stream is truncated (it ends inside a frame)")
                    : Corrupt("migration stream ended early (the other side closed it)");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return HostFail(errno, "read the migration stream");
    pollfd p{read_fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, PollMs(idle_timeout));
    if (ready < 0 && errno != EINTR) return HostFail(errno, "poll the migration stream");
    if (ready == 0) return HostFail(ETIMEDOUT, "migration stream: nothing arrived in time");
  }
  return {};
}

Result<> Channel::Send(uint32_t tag, std::span<const std::byte> payload) {
  Encoder header;
  header.U32(tag);
  header.U32(0);
  header.U64(payload.size());
  Encoder trailer;
  trailer.U32(Crc32(Crc32(0, header.bytes()), payload));
  TRY(WriteAll(header.bytes()));
  TRY(WriteAll(payload));
  return WriteAll(trailer.bytes());
}

Result<Frame> Channel::Receive(uint64_t max_length, std::chrono::milliseconds idle_timeout) {
  std::array<std::byte, kSectionHeaderSize> header{};
  TRY(ReadAll(header, idle_timeout, /*inside=*/false));
  Decoder d(header);
  Frame frame;
  frame.tag = d.U32();
  const uint32_t reserved = d.U32();
  const uint64_t length = d.U64();
  if (reserved != 0) return Corrupt("migration stream is corrupt (bad frame header)");
  if (length > max_length) return Corrupt("migration stream has a frame longer than allowed");
  uint32_t crc = Crc32(0, header);
  for (uint64_t done = 0; done < length;) {
    const size_t n = size_t(std::min<uint64_t>(kReadChunk, length - done));
    frame.payload.resize(size_t(done) + n);
    const auto part = std::span(frame.payload).subspan(size_t(done), n);
    TRY(ReadAll(part, idle_timeout, true));
    crc = Crc32(crc, part);
    done += n;
  }
  std::array<std::byte, kSectionTrailerSize> trailer{};
  TRY(ReadAll(trailer, idle_timeout, true));
  if (Decoder(trailer).U32() != crc)
    return Corrupt("migration stream is corrupt (frame checksum mismatch)");
  return frame;
}

// ---- HELO ----

std::vector<std::byte> EncodeHello(const Hello& hello) {
  Encoder e;
  e.Raw(std::as_bytes(std::span(kStreamMagic)));
  e.U32(kStreamVersion);
  e.Raw(std::as_bytes(std::span(hello.facts.cpu_vendor)));
  e.U32(hello.facts.page_size);
  e.U64(hello.facts.xsave_features);
  e.U32(hello.facts.xsave_size);
  e.U32(hello.vcpus);
  e.U64(hello.memory_mib);
  return e.Take();
}

Result<Hello> DecodeHello(std::span<const std::byte> payload) {
  Decoder d(payload);
  std::array<char, 8> magic{};
  d.Raw(std::as_writable_bytes(std::span(magic)));
  if (!d.ok() || magic != kStreamMagic) return Corrupt("not a xenkvm migration stream");
  if (d.U32() != kStreamVersion)
    return Corrupt("migration stream has another version (sent by another xenkvm)");
  Hello hello;
  d.Raw(std::as_writable_bytes(std::span(hello.facts.cpu_vendor)));
  hello.facts.page_size = d.U32();
  hello.facts.xsave_features = d.U64();
  hello.facts.xsave_size = d.U32();
  hello.vcpus = d.U32();
  hello.memory_mib = d.U64();
  if (!d.Finish()) return Corrupt("migration stream is corrupt (bad HELO frame)");
  return hello;
}

// ---- PAGE ----

void PageBatch::Add(uint64_t page_number, std::span<const std::byte, 4096> page) {
  const bool zero =
      std::all_of(page.begin(), page.end(), [](std::byte b) { return b == std::byte{0}; });
  entries_.push_back(page_number | (zero ? kZeroPage : 0));
  if (!zero) data_.insert(data_.end(), page.begin(), page.end());
}

std::vector<std::byte> PageBatch::Encode() const {
  Encoder e;
  e.U32(uint32_t(entries_.size()));
  e.U32(0);
  for (uint64_t entry : entries_) e.U64(entry);
  e.Raw(data_);
  return e.Take();
}

void PageBatch::Clear() {
  entries_.clear();
  data_.clear();
}

Result<> DecodePages(std::span<const std::byte> payload, uint64_t ram_pages,
                     const std::function<void(uint64_t, std::span<const std::byte>)>& apply) {
  Decoder d(payload);
  const uint32_t count = d.U32();
  const uint32_t reserved = d.U32();
  if (!d.ok() || reserved != 0 || count > kMaxBatchPages)
    return Corrupt("migration stream is corrupt (bad PAGE frame)");
  std::vector<uint64_t> entries(count);
  uint64_t with_data = 0;
  for (uint64_t& entry : entries) {
    entry = d.U64();
    if ((entry & ~kZeroPage) >= ram_pages) d.Invalid("migration stream: a page outside RAM");
    if ((entry & kZeroPage) == 0) ++with_data;
  }
  if (!d.ok()) return d.Finish();
  if (d.remaining() != with_data * 4096)
    return Corrupt("migration stream is corrupt (PAGE frame length does not match its pages)");
  size_t offset = payload.size() - d.remaining();
  for (uint64_t entry : entries) {
    if (entry & kZeroPage) {
      apply(entry & ~kZeroPage, {});
    } else {
      apply(entry, payload.subspan(offset, 4096));
      offset += 4096;
    }
  }
  return {};
}

}  // namespace xenkvm::snapshot
