// Guest image reading; see image.h.
#include "cli/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace xenkvm::cli {

namespace {
struct Messages {
  const char *open, *stat, *directory, *not_regular, *too_big, *changed;
};
constexpr Messages kGuestMessages{"cannot open the guest image",
                                  "cannot stat the guest image",
                                  "the guest image is a directory",
                                  "the guest image is not a regular file",
                                  "the guest image is larger than --max-image",
                                  "the guest image changed size while being read"};
constexpr Messages kInitrdMessages{"cannot open the initrd",
                                   "cannot stat the initrd",
                                   "the initrd is a directory",
                                   "the initrd is not a regular file",
                                   "the initrd is larger than guest RAM (--memory)",
                                   "the initrd changed size while being read"};
}  // namespace

Result<std::vector<uint8_t>> ReadImage(const std::string& path, uint64_t max_bytes,
                                       ImageKind kind) {
  const Messages& m = kind == ImageKind::kInitrd ? kInitrdMessages : kGuestMessages;
  // O_NONBLOCK: opening a FIFO must not wait for a writer; we refuse it after fstat anyway.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Fail(XEN_EINVAL, m.open);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Fail(XEN_EINVAL, m.stat);
  if (S_ISDIR(st.st_mode)) return Fail(XEN_EINVAL, m.directory);
  if (!S_ISREG(st.st_mode)) return Fail(XEN_EINVAL, m.not_regular);
  if (static_cast<uint64_t>(st.st_size) > max_bytes) return Fail(XEN_E2BIG, m.too_big);
  std::vector<uint8_t> image(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < image.size()) {
    const ssize_t n = ::read(fd, image.data() + done, image.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Fail(XEN_EINVAL, m.changed);
    done += static_cast<size_t>(n);
  }
  return image;
}

}  // namespace xenkvm::cli
