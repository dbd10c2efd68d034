// GuestMemory bounds/overflow checks, layout changes, and CachedMapping invalidation.
#include "mem/guest_memory.h"

#include <gtest/gtest.h>

#include <thread>

#include "mem/page_cache.h"

namespace xenkvm::mem {
namespace {

struct Backing {
  alignas(4096) uint8_t bytes[4 * 4096] = {};
};

int Errno(const Result<>& r) { return r ? 0 : r.error().xen_errno; }

TEST(GuestMemory, TranslatesInsideSlotsOnly) {
  Backing b;
  GuestMemory m;
  ASSERT_TRUE(m.AddSlot(0, 0x10000, sizeof(b.bytes), b.bytes));
  auto guard = LayoutGuard::Acquire(m);
  EXPECT_EQ(*m.TranslateGuarded(0x10000, 16), b.bytes);
  EXPECT_EQ(*m.TranslateGuarded(0x13ff0, 16), b.bytes + 0x3ff0);
  EXPECT_FALSE(m.TranslateGuarded(0x13ff8, 16));          // runs off the end
  EXPECT_FALSE(m.TranslateGuarded(0xfff0, 16));           // before the slot
  EXPECT_FALSE(m.TranslateGuarded(UINT64_MAX - 4, 16));   // wraps
  EXPECT_FALSE(m.TranslateGuarded(0x10000, UINT64_MAX));  // wraps
  EXPECT_EQ(m.TranslateGuarded(0x20000, 1).error().xen_errno, XEN_EFAULT);
}

TEST(GuestMemory, RejectsBadAndOverlappingSlots) {
  Backing b, c;
  GuestMemory m;
  EXPECT_EQ(Errno(m.AddSlot(0, 0x1001, 4096, b.bytes)), XEN_EINVAL);                  // unaligned
  EXPECT_EQ(Errno(m.AddSlot(0, 0x1000, 0, b.bytes)), XEN_EINVAL);                     // empty
  EXPECT_EQ(Errno(m.AddSlot(0, UINT64_MAX & ~0xfffull, 8192, b.bytes)), XEN_EINVAL);  // wraps
  EXPECT_EQ(Errno(m.AddSlot(GuestMemory::kMaxSlots, 0, 4096, b.bytes)), XEN_EINVAL);
  ASSERT_TRUE(m.AddSlot(0, 0x10000, sizeof(b.bytes), b.bytes));
  EXPECT_EQ(Errno(m.AddSlot(0, 0x80000, 4096, c.bytes)), XEN_EEXIST);  // slot in use
  EXPECT_EQ(Errno(m.AddSlot(1, 0x13000, 8192, c.bytes)), XEN_EEXIST);  // overlaps
  ASSERT_TRUE(m.AddSlot(1, 0x14000, 8192, c.bytes));                   // adjacent is fine
  EXPECT_EQ(Errno(m.MoveSlot(1, 0x12000)), XEN_EEXIST);
  EXPECT_EQ(Errno(m.RemoveSlot(2)), XEN_ENOENT);
}

TEST(GuestMemory, TypedReadWriteAndMove) {
  Backing b;
  GuestMemory m;
  ASSERT_TRUE(m.AddSlot(3, 0x10000, sizeof(b.bytes), b.bytes));
  ASSERT_TRUE(m.WriteObj<uint64_t>(0x10008, 0x1122334455667788ull));
  EXPECT_EQ(*m.ReadObj<uint64_t>(0x10008), 0x1122334455667788ull);
  EXPECT_FALSE(m.ReadObj<uint64_t>(0x13ffc));
  EXPECT_TRUE(m.Write(0x10000, {}));  // empty accesses touch nothing
  EXPECT_TRUE(m.Read(0x10000, {}));
  const uint64_t gen = m.generation();
  ASSERT_TRUE(m.MoveSlot(3, 0x40000));
  EXPECT_NE(m.generation(), gen);
  EXPECT_FALSE(m.ReadObj<uint64_t>(0x10008));
  EXPECT_EQ(*m.ReadObj<uint64_t>(0x40008), 0x1122334455667788ull);
}

TEST(CachedMapping, ValidOnlyUnderTheGenerationItWasMadeIn) {
  Backing b;
  GuestMemory m;
  ASSERT_TRUE(m.AddSlot(0, 0x10000, sizeof(b.bytes), b.bytes));
  CachedMapping page(4096);
  {
    auto guard = LayoutGuard::Acquire(m);
    EXPECT_EQ(page.Get(m), nullptr);
    EXPECT_EQ(page.Refresh(m).error().xen_errno, XEN_ENOENT);  // no GPA yet
  }
  page.SetGpa(0x11000);
  {
    auto guard = LayoutGuard::Acquire(m);
    EXPECT_EQ(page.Get(m), nullptr);  // set but not translated yet
    EXPECT_EQ(*page.Refresh(m), b.bytes + 0x1000);
    EXPECT_EQ(page.Get(m), b.bytes + 0x1000);
  }
  ASSERT_TRUE(m.MoveSlot(0, 0x20000));
  {
    auto guard = LayoutGuard::Acquire(m);
    EXPECT_EQ(page.Get(m), nullptr);  // layout changed
    EXPECT_EQ(page.Refresh(m).error().xen_errno, XEN_EFAULT);
    EXPECT_EQ(page.TryRefresh(m), nullptr);
  }
  ASSERT_TRUE(m.MoveSlot(0, 0x10000));
  auto guard = LayoutGuard::TryAcquire(m);
  ASSERT_TRUE(guard);
  EXPECT_EQ(page.TryRefresh(m), b.bytes + 0x1000);
}

TEST(LayoutGuard, TryAcquireFailsWhileALayoutChangeWaitsForReaders) {
  Backing b;
  GuestMemory m;
  ASSERT_TRUE(m.AddSlot(0, 0x10000, sizeof(b.bytes), b.bytes));
  std::atomic<bool> changed{false};
  std::thread changer;
  {
    auto reader = LayoutGuard::Acquire(m);
    changer = std::thread([&] {
      EXPECT_TRUE(m.MoveSlot(0, 0x20000));
      changed = true;
    });
    // The change is announced but must wait for us; new readers (on other threads) back off.
    bool other_reader_got_in = true;
    while (other_reader_got_in) {
      std::thread([&] { other_reader_got_in = bool(LayoutGuard::TryAcquire(m)); }).join();
    }
    EXPECT_FALSE(changed);
    EXPECT_TRUE(LayoutGuard::TryAcquire(m));  // a nested guard on this thread is still fine
    EXPECT_EQ(*m.TranslateGuarded(0x10000, 8), b.bytes);  // our translation still holds
  }
  changer.join();
  EXPECT_TRUE(changed);
  EXPECT_TRUE(LayoutGuard::TryAcquire(m));
}

}  // namespace
}  // namespace xenkvm::mem
