// Disk images for the kvm tests of PV disks: filled with the pattern our blkfront guests check
// (guests/runtime/blkfront.h blk_pattern), and read back to check what a guest wrote.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace xenkvm::testing {

inline uint64_t BlkPattern(uint64_t seed, uint64_t sector, unsigned word) {
  return (seed << 56) ^ (sector << 8) ^ word ^ 0x5a5a000000000000ull;
}
inline constexpr unsigned kSectorWords = 512 / 8;

class DiskImage {
 public:
  // In /dev/shm where there is one (tmpfs punches holes; the nested VM's 9p root cannot).
  DiskImage(uint64_t sectors, uint64_t seed) {
    char shm[] = "/dev/shm/xenkvm-disk-XXXXXX", tmp[] = "/tmp/xenkvm-disk-XXXXXX";
    int fd = mkstemp(shm);
    path_ = shm;
    if (fd < 0) {
      fd = mkstemp(tmp);
      path_ = tmp;
    }
    std::vector<uint64_t> data(sectors * kSectorWords);
    for (uint64_t s = 0; s < sectors; ++s)
      for (unsigned w = 0; w < kSectorWords; ++w)
        data[s * kSectorWords + w] = BlkPattern(seed, s, w);
    const size_t bytes = data.size() * sizeof(uint64_t);
    ok_ = fd >= 0 && write(fd, data.data(), bytes) == static_cast<ssize_t>(bytes);
    if (fd >= 0) close(fd);
  }
  ~DiskImage() { unlink(path_.c_str()); }
  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }
  std::vector<uint64_t> Read(uint64_t sector, uint64_t count) const {
    std::vector<uint64_t> out(count * kSectorWords);
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(sector * 512));
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size() * 8));
    if (!in) out.clear();
    return out;
  }
  // The first sector in [sector, sector + count) not holding seed's pattern, or -1.
  int64_t FirstNotPattern(uint64_t seed, uint64_t sector, uint64_t count) const {
    const auto data = Read(sector, count);
    if (data.empty()) return static_cast<int64_t>(sector);
    for (uint64_t s = 0; s < count; ++s)
      for (unsigned w = 0; w < kSectorWords; ++w)
        if (data[s * kSectorWords + w] != BlkPattern(seed, sector + s, w))
          return static_cast<int64_t>(sector + s);
    return -1;
  }
  // Whether its file system punches holes (what the backend asks before offering discard).
  bool CanPunchHoles() const {
    const int fd = open(path_.c_str(), O_RDWR | O_CLOEXEC);
    struct stat st {};
    const bool ok =
        fd >= 0 && fstat(fd, &st) == 0 &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size, 4096) == 0;
    if (fd >= 0) close(fd);
    return ok;
  }
  bool IsZero(uint64_t sector, uint64_t count) const {
    const auto data = Read(sector, count);
    return !data.empty() &&
           std::all_of(data.begin(), data.end(), [](uint64_t v) { return v == 0; });
  }

 private:
  std::string path_;
  bool ok_ = false;
};

// The scenarios guests/blkfront.c prints as "blkfront: PASS <name>" (discard, whose line
// says whether it was offered, is checked by its own test).
inline constexpr std::array<const char*, 9> kBlkfrontScenarios = {
    "reads",     "writes",      "flush",     "indirect",
    "reconnect", "multi-queue", "full ring", "x86_32-abi layout",
    "read-only"};

// What guests/blkfront.c writes, run with `--disk rw --disk ro,ro` on images made with seeds
// 0xa1 and 0xb2, landed where it said and nowhere else. The discarded sectors (1024..1151) are
// the caller's: zeros or the pattern, depending on whether the image can punch holes.
inline void ExpectBlkfrontWrites(const DiskImage& rw, const DiskImage& ro) {
  EXPECT_EQ(rw.FirstNotPattern(0xa1, 0, 200), -1);
  EXPECT_EQ(rw.FirstNotPattern(0xc3, 200, 32), -1);  // write + barrier write
  EXPECT_EQ(rw.FirstNotPattern(0xa1, 232, 1024 - 232), -1);
  EXPECT_EQ(rw.FirstNotPattern(0xa1, 1152, 2048 - 1152), -1);
  EXPECT_EQ(rw.FirstNotPattern(0xd4, 2048, 256), -1);  // the indirect write
  EXPECT_EQ(rw.FirstNotPattern(0xa1, 2304, 3000 - 2304), -1);
  EXPECT_EQ(rw.FirstNotPattern(0xe5, 3000, 16), -1);  // written through queue 1
  EXPECT_EQ(rw.FirstNotPattern(0xa1, 3016, 5120 - 3016), -1);
  EXPECT_EQ(rw.FirstNotPattern(0xf6, 5120, 64), -1);  // written in the x86_32-abi layout
  EXPECT_EQ(rw.FirstNotPattern(0xa1, 5184, 8192 - 5184), -1);
  EXPECT_EQ(ro.FirstNotPattern(0xb2, 0, 2048), -1) << "the read-only image changed";
}

}  // namespace xenkvm::testing
