// Guest image reading; see image.h.
#include "cli/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace xenkvm::cli {

Result<std::vector<uint8_t>> ReadImage(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; we refuse it after fstat anyway.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Fail(XEN_EINVAL, "cannot open the guest image");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Fail(XEN_EINVAL, "cannot stat the guest image");
  if (S_ISDIR(st.st_mode)) return Fail(XEN_EINVAL, "the guest image is a directory");
  if (!S_ISREG(st.st_mode)) return Fail(XEN_EINVAL, "the guest image is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return Fail(XEN_E2BIG, "the guest image is larger than --max-image");
  std::vector<uint8_t> image(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < image.size()) {
    const ssize_t n = ::read(fd, image.data() + done, image.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Fail(XEN_EINVAL, "the guest image changed size while being read");
    done += static_cast<size_t>(n);
  }
  return image;
}

}  // namespace xenkvm::cli
