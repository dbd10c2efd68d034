// libFuzzer entry: a hostile migration stream (snapshot/stream.h) as the destination reads it:
// frames off a socket until the stream fails, each HELO and PAGE payload decoded. Receive must
// refuse or return a frame no longer than allowed; a decoded batch must only name pages inside
// RAM, each with 4 KiB of bytes or none (a zero page).
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "snapshot/stream.h"

namespace {
constexpr uint64_t kRamPages = 16;
constexpr uint64_t kMaxFrame = 64 * 1024;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  // The whole input fits in the socket's buffer (inputs are a few KiB): write, then end it.
  if (size > 0 && ::write(fds[1], data, size) != ssize_t(size)) std::abort();
  ::close(fds[1]);
  xenkvm::snapshot::Channel in(fds[0], fds[0]);
  for (;;) {
    auto frame = in.Receive(kMaxFrame, std::chrono::milliseconds(1000));
    if (!frame) {
      if (frame.error().message == nullptr) std::abort();
      break;
    }
    if (frame->payload.size() > kMaxFrame) std::abort();
    if (frame->tag == xenkvm::snapshot::kHelloFrame) {
      (void)xenkvm::snapshot::DecodeHello(frame->payload);
    } else if (frame->tag == xenkvm::snapshot::kPagesFrame) {
      (void)xenkvm::snapshot::DecodePages(
          frame->payload, kRamPages, [](uint64_t page, std::span<const std::byte> bytes) {
            if (page >= kRamPages || (!bytes.empty() && bytes.size() != 4096)) std::abort();
          });
    }
  }
  return 0;
}
