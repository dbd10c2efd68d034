// Opening images: size from fstat or BLKGETSIZE64, O_DIRECT alignment from statx (STATX_DIOALIGN)
// or, where the kernel does not say, from a probe read.
#include "backends/blkif/disk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace xenkvm::blkif {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

namespace {

// The smallest alignment O_DIRECT accepts on this fd, or 0.
uint32_t DirectAlignment(int fd) {
#ifdef STATX_DIOALIGN
  struct statx stx {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN)) {
    const uint32_t align = std::max(stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    return align <= 4096 ? align : 0;
  }
#endif
  void* buf = std::aligned_alloc(4096, 4096);
  uint32_t found = 0;
  for (uint32_t align : {512u, 4096u}) {
    if (pread(fd, buf, align, 0) >= 0) {
      found = align;
      break;
    }
  }
  std::free(buf);
  return found;
}

}  // namespace

Result<Disk> Disk::Open(const std::string& path, bool read_only) {
  Disk disk;
  disk.read_only = read_only;
  const int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  disk.buffered = UniqueFd(open(path.c_str(), flags));
  if (!disk.buffered) return Fail(XEN_ENOENT, "disk: cannot open image");
  struct stat st {};
  if (fstat(disk.buffered.get(), &st) != 0) return Fail(XEN_EINVAL, "disk: fstat failed");
  if (S_ISBLK(st.st_mode)) {
    disk.block_device = true;
    if (ioctl(disk.buffered.get(), BLKGETSIZE64, &disk.size_bytes) != 0)
      return Fail(XEN_EINVAL, "disk: BLKGETSIZE64 failed");
    unsigned int physical = 0;
    if (ioctl(disk.buffered.get(), BLKPBSZGET, &physical) == 0 && physical >= 512)
      disk.physical_block_size = physical;
  } else if (S_ISREG(st.st_mode)) {
    disk.size_bytes = uint64_t(st.st_size);
    if (st.st_blksize >= 512 && st.st_blksize <= 65536)
      disk.physical_block_size = uint32_t(st.st_blksize);
    // Discard is a punched hole: ask the file system with one past the end, which changes
    // nothing where it works (ext4, xfs, tmpfs) and fails where it does not (9p, some FUSE).
    disk.punch_hole =
        !read_only && fallocate(disk.buffered.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                off_t(disk.size_bytes), 4096) == 0;
  } else {
    return Fail(XEN_EINVAL, "disk: not a regular file or block device");
  }
  disk.direct = UniqueFd(open(path.c_str(), flags | O_DIRECT));
  if (disk.direct) {
    disk.dio_align = DirectAlignment(disk.direct.get());
    if (disk.dio_align == 0) disk.direct = UniqueFd();
  }
  return disk;
}

}  // namespace xenkvm::blkif
