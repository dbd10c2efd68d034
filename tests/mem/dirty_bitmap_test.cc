// DirtyBitmap (KVM's dirty-log layout, merges, marks from many threads) and GuestMemory's
// translation tracking that live migration uses to catch the VMM's own writes.
#include "mem/dirty_bitmap.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "mem/guest_memory.h"
#include "mem/page_cache.h"

namespace xenkvm::mem {
namespace {

TEST(DirtyBitmap, MarksPagesAndByteRanges) {
  DirtyBitmap b(130);  // not a multiple of 64: the last word is partial
  EXPECT_EQ(b.words(), 3u);
  EXPECT_EQ(b.Count(), 0u);
  b.Mark(0);
  b.Mark(129);
  b.Mark(130);                    // past the end: ignored
  b.MarkBytes(64 * 4096 - 1, 2);  // straddles pages 63 and 64
  b.MarkBytes(10 * 4096, 0);      // empty: nothing
  EXPECT_EQ(b.SetPages(), (std::vector<uint64_t>{0, 63, 64, 129}));
  EXPECT_TRUE(b.Test(63));
  EXPECT_FALSE(b.Test(10));
  EXPECT_FALSE(b.Test(1000));
  b.Clear();
  EXPECT_EQ(b.Count(), 0u);
}

// KVM_GET_DIRTY_LOG's layout: page i is bit i % 64 of word i / 64; bits past the end dropped.
TEST(DirtyBitmap, MergesKvmWordsAndOtherBitmaps) {
  DirtyBitmap b(70);
  const std::vector<uint64_t> kvm = {0x8000000000000005ull, ~0ull, 0xff};
  b.Merge(kvm);
  std::vector<uint64_t> want = {0, 2, 63, 64, 65, 66, 67, 68, 69};
  EXPECT_EQ(b.SetPages(), want);
  DirtyBitmap other(200);
  other.Mark(5);
  other.Mark(150);  // beyond b: dropped
  b.Merge(other);
  want.insert(want.begin() + 2, 5);
  EXPECT_EQ(b.SetPages(), want);
  EXPECT_EQ(b.Count(), want.size());
}

TEST(DirtyBitmap, ConcurrentMarksAreAllKept) {
  DirtyBitmap b(64 * 8);
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t)
    threads.emplace_back([&b, t] {
      for (uint64_t page = t; page < b.pages(); page += 4) b.Mark(page);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(b.Count(), b.pages());
}

// Every page a translation hands out while tracking is recorded; cached mappings made before
// tracking began are invalidated, so their next use translates (and records) again.
TEST(GuestMemoryTracking, RecordsTranslatedPagesAndInvalidatesCachedMappings) {
  alignas(4096) static uint8_t ram[8 * 4096];
  GuestMemory m;
  ASSERT_TRUE(m.AddSlot(0, 0, sizeof(ram), ram));
  CachedMapping cached(4096);
  cached.SetGpa(3 * 4096);
  {
    auto guard = LayoutGuard::Acquire(m);
    ASSERT_TRUE(cached.Refresh(m));
    ASSERT_NE(cached.Get(m), nullptr);
  }
  ASSERT_TRUE(m.Write(5 * 4096, std::as_bytes(std::span("x", 1))));  // not tracked yet

  DirtyBitmap tracked(8);
  m.TrackTranslations(&tracked);
  {
    auto guard = LayoutGuard::Acquire(m);
    EXPECT_EQ(cached.Get(m), nullptr);  // must translate again
    ASSERT_TRUE(cached.Refresh(m));
  }
  ASSERT_TRUE(m.Write(4096 - 1, std::as_bytes(std::span("ab", 2))));  // pages 0 and 1
  std::byte out[8];
  ASSERT_TRUE(m.Read(7 * 4096, out));
  m.NoteHostWrite(2 * 4096, 4096);  // released RAM: zeroed behind every translation
  EXPECT_EQ(tracked.SetPages(), (std::vector<uint64_t>{0, 1, 2, 3, 7}));

  m.TrackTranslations(nullptr);
  ASSERT_TRUE(m.Write(6 * 4096, std::as_bytes(std::span("y", 1))));
  m.NoteHostWrite(4 * 4096, 1);
  EXPECT_FALSE(tracked.Test(6));
  EXPECT_FALSE(tracked.Test(4));
}

}  // namespace
}  // namespace xenkvm::mem
