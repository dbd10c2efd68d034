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
  Set64(0x4000 + 8 * 5, 0x77000 | kP | kRw);     // GVA 0x5000 -> 0x77000
  Set64(0x3000 + 8 * 1, 0x600000 | kP | kPs);    // GVA 0x200000.. -> 2 MiB page at 0x600000
  Set64(0x2000 + 8 * 1, 0x40000000 | kP | kPs);  // GVA 1 GiB.. -> 1 GiB page at 1 GiB
  EXPECT_EQ(*WalkPageTables(memory_, kLong, 0x5abc), 0x77abcu);
  EXPECT_EQ(*WalkPageTables(memory_, kLong, 0x212345), 0x612345u);
  EXPECT_EQ(*WalkPageTables(memory_, kLong, 0x40001234), 0x40001234u);
  EXPECT_EQ(WalkPageTables(memory_, kLong, 0x6000).error().xen_errno, XEN_EFAULT);  // PTE absent
  EXPECT_EQ(WalkPageTables(memory_, kLong, 0x8000000000).error().xen_errno,
            XEN_EFAULT);  // PML4E absent
  EXPECT_EQ(WalkPageTables(memory_, kLong, 0x0000800000000000).error().xen_errno,
            XEN_EFAULT);  // non-canonical
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

// Permissions, as Xen's guest_walk_tables checks them for hypercall copies: a write through a
// read-only mapping faults (for supervisor writes only with CR0.WP), user accesses need U/S at
// every level, fetches honour NX (with EFER.NXE), and reserved bits fault.
TEST_F(PageWalkTest, PermissionsAndReservedBits) {
  constexpr uint64_t kUs = 4, kNx = 1ull << 63;
  Set64(0x1000, 0x2000 | kP | kRw | kUs);
  Set64(0x2000, 0x3000 | kP | kRw | kUs);
  Set64(0x3000, 0x4000 | kP | kRw | kUs);
  Set64(0x4000 + 8 * 1, 0x71000 | kP | kUs);              // GVA 0x1000: read-only, user
  Set64(0x4000 + 8 * 2, 0x72000 | kP | kRw);              // GVA 0x2000: writable, supervisor
  Set64(0x4000 + 8 * 3, 0x73000 | kP | kRw | kNx);        // GVA 0x3000: no-execute
  const PagingState wp{0x80010011, 0x1000, 0x20, 0xd00};  // CR0.WP, EFER.LMA|LME|NXE
  const PagingState no_wp{0x80000011, 0x1000, 0x20, 0xd00};
  using xen::Access;
  EXPECT_EQ(*WalkPageTables(memory_, wp, 0x1008, Access::kRead), 0x71008u);
  EXPECT_EQ(WalkPageTables(memory_, wp, 0x1008, Access::kWrite).error().xen_errno, XEN_EFAULT);
  EXPECT_EQ(*WalkPageTables(memory_, no_wp, 0x1008, Access::kWrite),
            0x71008u);  // WP clear: allowed
  EXPECT_FALSE(WalkPageTables(memory_, no_wp, 0x1008, Access::kWrite, /*user=*/true));
  EXPECT_TRUE(WalkPageTables(memory_, wp, 0x1008, Access::kRead, /*user=*/true));
  EXPECT_FALSE(
      WalkPageTables(memory_, wp, 0x2008, Access::kRead, /*user=*/true));  // supervisor page
  EXPECT_TRUE(WalkPageTables(memory_, wp, 0x2008, Access::kWrite));
  EXPECT_TRUE(WalkPageTables(memory_, wp, 0x3008, Access::kRead));
  EXPECT_FALSE(WalkPageTables(memory_, wp, 0x3008, Access::kFetch));
  EXPECT_TRUE(WalkPageTables(memory_, wp, 0x2008, Access::kFetch));
  // A read-only upper level makes the whole range read-only.
  Set64(0x3000, 0x4000 | kP | kUs);
  EXPECT_FALSE(WalkPageTables(memory_, wp, 0x2008, Access::kWrite));
  Set64(0x3000, 0x4000 | kP | kRw | kUs);
  // NX set while EFER.NXE is clear is a reserved bit: even a read faults.
  const PagingState no_nxe{0x80010011, 0x1000, 0x20, 0x500};
  EXPECT_FALSE(WalkPageTables(memory_, no_nxe, 0x3008, Access::kRead));
  // PS in a PML4E and low bits set in a 2 MiB mapping are reserved.
  Set64(0x1000 + 8 * 1, 0x2000 | kP | kPs);
  EXPECT_FALSE(WalkPageTables(memory_, wp, 0x8000000000, Access::kRead));
  Set64(0x3000 + 8 * 1, 0x600000 | kP | kPs | 0x2000);
  EXPECT_FALSE(WalkPageTables(memory_, wp, 0x200000, Access::kRead));
  Set64(0x3000 + 8 * 1, 0x600000 | kP | kPs);
  EXPECT_TRUE(WalkPageTables(memory_, wp, 0x200000, Access::kRead));
}

}  // namespace
}  // namespace xenkvm::vmm
