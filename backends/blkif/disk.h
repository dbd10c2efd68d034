// The host side of a virtual disk: a raw image file or a block device, opened once buffered and,
// where the file system allows it, once more with O_DIRECT (with the alignment it requires).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "abi/result.h"

namespace xenkvm::blkif {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  ~UniqueFd();
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct Disk {
  UniqueFd buffered;
  UniqueFd direct;          // invalid when O_DIRECT is refused
  uint32_t dio_align = 0;   // offset/length/address alignment O_DIRECT needs (0: no O_DIRECT)
  uint64_t size_bytes = 0;  // whole 512-byte sectors only are exposed
  bool block_device = false;
  bool read_only = false;
  bool punch_hole = false;  // a writable image file whose file system can punch holes (discard)
  uint32_t physical_block_size = 512;

  // Errors: XEN_ENOENT (cannot open), XEN_EINVAL (not a regular file or block device).
  static Result<Disk> Open(const std::string& path, bool read_only);
};

}  // namespace xenkvm::blkif
