// vmm/page_walk: long-mode 4-level walks with 4 KiB, 2 MiB and 1 GiB pages, PAE and 32-bit
// walks, paging off, and -EFAULT for non-present entries, non-canonical addresses and LA57.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "vmm/page_walk.h"

namespace xenkvm::vmm {
namespace {

constexpr uint64_t kRam = 8 << 20;
constexpr uint64_t kP = 1, kRw = 2, kPs = 0x80;

class PageWalkTest : public ::testing::Test {
 protected:
  PageWalkTest() : ram_(static_cast<uint8_t*>(std::aligned_alloc(4096, kRam))) {
    std::memset(ram_.get(), 0, kRam);
    EXPECT_TRUE(memory_.AddSlot(0, 0, kRam, ram_.get()));
  }
  void Set64(uint64_t gpa, uint64_t v) { std::memcpy(ram_.get() + gpa, &v, 8); }
  void Set32(uint64_t gpa, uint32_t v) { std::memcpy(ram_.get() + gpa, &v, 4); }
  struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> ram_;
  mem::GuestMemory memory_;
};

const PagingState kLong{0x80000011, 0x1000, 0x20, 0x500};

TEST_F(PageWalkTest, PagingOffIsIdentity) {
  auto r = WalkPageTables(memory_, PagingState{0x11, 0, 0, 0}, 0x12345);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0x12345u);
}

TEST_F(PageWalkTest, LongMode4K2M1G) {
  // PML4 @0x1000 -> PDPT @0x2000 -> PD @0x3000 -> PT @0x4000.
  Set64(0x1000, 0x2000 | kP | kRw);
  Set64(0x2000, 0x3000 | kP | kRw);
  Set64(0x3000, 0x4000 | kP | kRw);
  Set64(0x4000 + 8 * 5, 0x77000 | kP | kRw);    // GVA 0x5000 -> 0x77000
  Set64(0x3000 + 8 * 1, 0x600000 | kP | kPs);   // GVA 0x200000.. -> 2 MiB page at 0x600000
  Set64(0x2000 + 8 * 1, 0x40000000 | kP | kPs); // GVA 1 GiB.. -> 1 GiB page at 1 GiB
  EXPECT_EQ(*WalkPageTables(memory_, kLong, 0x5abc), 0x77abcu);
  EXPECT_EQ(*WalkPageTables(memory_, kLong, 0x212345), 0x612345u);
  EXPECT_EQ(*WalkPageTables(memory_, kLong, 0x40001234), 0x40001234u);
  EXPECT_EQ(WalkPageTables(memory_, kLong, 0x6000).error().xen_errno, XEN_EFAULT);          // PTE absent
  EXPECT_EQ(WalkPageTables(memory_, kLong, 0x8000000000).error().xen_errno, XEN_EFAULT);    // PML4E absent
  EXPECT_EQ(WalkPageTables(memory_, kLong, 0x0000800000000000).error().xen_errno, XEN_EFAULT);  // non-canonical
  PagingState la57 = kLong;
  la57.cr4 |= 1 << 12;
  EXPECT_FALSE(WalkPageTables(memory_, la57, 0x5000));
  // A table pointer outside RAM faults instead of crashing.
  Set64(0x4000 + 8 * 7, 0x7000 | kP);
  Set64(0x3000 + 8 * 2, (kRam + 0x1000) | kP);
  EXPECT_EQ(WalkPageTables(memory_, kLong, 0x400000).error().xen_errno, XEN_EFAULT);
}

TEST_F(PageWalkTest, PaeAndTwoLevel) {
  // PAE: PDPT @0x1000 (32-byte aligned), PD @0x2000, PT @0x3000.
  Set64(0x1000, 0x2000 | kP);
  Set64(0x2000, 0x3000 | kP);
  Set64(0x3000 + 8 * 2, 0x99000 | kP);
  Set64(0x2000 + 8 * 1, 0x400000 | kP | kPs);
  PagingState pae{0x80000011, 0x1000, 0x20, 0};
  EXPECT_EQ(*WalkPageTables(memory_, pae, 0x2010), 0x99010u);
  EXPECT_EQ(*WalkPageTables(memory_, pae, 0x200010), 0x400010u);
  // 32-bit: PD @0x5000, PT @0x6000, 4 MiB page with PSE.
  Set32(0x5000, 0x6000 | kP);
  Set32(0x6000 + 4 * 3, 0x88000 | kP);
  Set32(0x5000 + 4 * 1, 0x400000 | kP | kPs);
  PagingState two{0x80000011, 0x5000, 0x10, 0};
  EXPECT_EQ(*WalkPageTables(memory_, two, 0x3004), 0x88004u);
  EXPECT_EQ(*WalkPageTables(memory_, two, 0x400004), 0x400004u);
  EXPECT_FALSE(WalkPageTables(memory_, two, 0x800000));
}

}  // namespace
}  // namespace xenkvm::vmm
