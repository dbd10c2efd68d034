// Grant table v1: the guest's GNTTABOP_* and XENMAPSPACE_grant_table, and the backend side
// (map read-only / read-write with Xen's entry checks and in-use flags, copies), with hostile
// entries.
#include <gtest/gtest.h>

#include <thread>

#include "abi/compat.h"
#include "backends/blkif/xen_grants.h"
#include "tests/xen/hypercall_fixture.h"

namespace xenkvm::xen::testing {
namespace {

constexpr uint64_t kFrameGfn = 0x70;  // grant frame 0, in RAM
constexpr uint64_t kDataGfn = 0x80;   // the page the guest grants

class GrantsTest : public HypercallTest {
 protected:
  long MapFrame(uint64_t idx, uint64_t gfn) {
    xen_add_to_physmap_t x{};
    x.domid = DOMID_SELF;
    x.space = XENMAPSPACE_grant_table;
    x.idx = idx;
    x.gpfn = gfn;
    Put(kArg, x);
    return Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg);
  }
  void Grant(uint32_t ref, uint16_t flags, uint16_t domid = 0, uint32_t frame = kDataGfn) {
    grant_entry_v1_t e{flags, domid, frame};
    Put((kFrameGfn << 12) + ref * sizeof(e), e);
  }
  uint16_t Flags(uint32_t ref) {
    return Get<uint16_t>((kFrameGfn << 12) + ref * sizeof(grant_entry_v1_t));
  }
  GrantTable& grants() { return domain_->grants(); }
};

TEST_F(GrantsTest, SetupTableReportsFrameGfnsAndLimits) {
  ASSERT_EQ(MapFrame(1, kFrameGfn), 0);
  gnttab_setup_table_t op{};
  op.dom = DOMID_SELF;
  op.nr_frames = 3;
  SetHandleGva(op.frame_list, 0x20000);
  Put(kArg, op);
  ASSERT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, kArg, 1), 0);
  EXPECT_EQ(Get<gnttab_setup_table_t>(kArg).status, GNTST_okay);
  EXPECT_EQ(Get<uint64_t>(0x20000), ~uint64_t{0});  // frame 0 exists but is not mapped
  EXPECT_EQ(Get<uint64_t>(0x20008), kFrameGfn);
  EXPECT_EQ(grants().nr_frames(), 3u);
  op.nr_frames = GrantTable::kDefaultMaxFrames + 1;
  Put(kArg, op);
  ASSERT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, kArg, 1), 0);
  EXPECT_EQ(Get<gnttab_setup_table_t>(kArg).status, GNTST_general_error);
  op.dom = 9;
  Put(kArg, op);
  ASSERT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, kArg, 1), 0);
  EXPECT_EQ(Get<gnttab_setup_table_t>(kArg).status, GNTST_bad_domain);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, kArg, 2), -XEN_EINVAL);
}

TEST_F(GrantsTest, CompatSetupTableUses32BitFrames) {
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);
  compat_ = true;
  Put(kArg, abi::CompatGnttabSetupTable{DOMID_SELF, 1, 0, 0x20000});
  Put<uint64_t>(0x20000, ~uint64_t{0});
  ASSERT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, kArg, 1), 0);
  EXPECT_EQ(Get<abi::CompatGnttabSetupTable>(kArg).status, GNTST_okay);
  EXPECT_EQ(Get<uint64_t>(0x20000), 0xffffffff00000000ull | kFrameGfn);  // one 4-byte element
  // An unmapped frame's INVALID_GFN does not fit 32 bits (Xen's compat answer).
  Put(kArg, abi::CompatGnttabSetupTable{DOMID_SELF, 2, 0, 0x20000});
  ASSERT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, kArg, 1), 0);
  EXPECT_EQ(Get<abi::CompatGnttabSetupTable>(kArg).status, GNTST_address_too_big);
}

TEST_F(GrantsTest, FramesGoAnywhereAndMoveWithTheirEntries) {
  const uint64_t above = kRamSize >> 12;
  ASSERT_EQ(MapFrame(0, above), 0);  // outside RAM: a special page
  EXPECT_EQ(platform_.special.count(above), 1u);
  grant_entry_v1_t e{GTF_permit_access, 0, kDataGfn};
  ASSERT_TRUE(memory_.WriteObj(above << 12, e));
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);  // into RAM: contents come along, the page goes
  EXPECT_EQ(platform_.special.count(above), 0u);
  EXPECT_EQ(Get<grant_entry_v1_t>(kFrameGfn << 12).frame, kDataGfn);
  EXPECT_TRUE(grants().Map(0, 0, true));
  // The status-frame bit with version 1 in force is an index beyond the table.
  EXPECT_EQ(MapFrame(XENMAPIDX_grant_table_status | 1, 0x71), -XEN_EINVAL);
  EXPECT_EQ(MapFrame(GrantTable::kDefaultMaxFrames, 0x71), -XEN_EINVAL);
  EXPECT_EQ(MapFrame(1, kFrameGfn), -XEN_EBUSY);  // two frames at one gfn
}

TEST_F(GrantsTest, VersionIsOneAndTwoIsRefused) {
  gnttab_get_version_t v{};
  v.dom = DOMID_SELF;
  Put(kArg, v);
  ASSERT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_get_version, kArg, 1), 0);
  EXPECT_EQ(Get<gnttab_get_version_t>(kArg).version, 1u);
  v.dom = 3;
  Put(kArg, v);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_get_version, kArg, 1), -XEN_ESRCH);
  Put<uint32_t>(kArg, 2);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_set_version, kArg, 1), -XEN_ENOSYS);
  EXPECT_EQ(Get<uint32_t>(kArg), 1u);
}

TEST_F(GrantsTest, BackendMapChecksEntryAndTracksInUseFlags) {
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);
  Put<uint32_t>(kDataGfn << 12, 0x1234);
  Grant(1, GTF_permit_access);
  Grant(2, GTF_permit_access | GTF_readonly);
  Grant(3, GTF_permit_access, /*domid=*/5);
  Grant(4, GTF_accept_transfer);
  Grant(5, GTF_permit_access, 0, /*frame=*/kRamSize >> 12);  // not RAM
  Grant(6, 0);

  {
    auto ro = grants().Map(0, 1, /*readonly=*/true);
    ASSERT_TRUE(ro);
    EXPECT_EQ(Flags(1), GTF_permit_access | GTF_reading);
    uint32_t word;
    std::memcpy(&word, ro->data().data(), 4);
    EXPECT_EQ(word, 0x1234u);
    {
      auto rw = grants().Map(0, 1, /*readonly=*/false);
      ASSERT_TRUE(rw);
      EXPECT_EQ(Flags(1), GTF_permit_access | GTF_reading | GTF_writing);
      std::memcpy(rw->data().data(), "xy", 2);
    }
    EXPECT_EQ(Flags(1), GTF_permit_access | GTF_reading);  // writer gone, reader still there
    EXPECT_EQ(Get<uint16_t>(kDataGfn << 12), 'x' | ('y' << 8));
  }
  EXPECT_EQ(Flags(1), GTF_permit_access);

  EXPECT_TRUE(grants().Map(0, 2, true));
  auto refused = grants().Map(0, 2, false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(GrantTable::GrantStatus(refused.error()), GNTST_general_error);
  EXPECT_EQ(Flags(2), GTF_permit_access | GTF_readonly);  // untouched
  EXPECT_FALSE(grants().Map(0, 3, true));                 // granted to domain 5
  EXPECT_TRUE(grants().Map(5, 3, true));
  EXPECT_FALSE(grants().Map(0, 4, true));  // not a permit_access entry
  EXPECT_FALSE(grants().Map(0, 6, true));
  auto not_ram = grants().Map(0, 5, true);
  ASSERT_FALSE(not_ram);
  EXPECT_EQ(GrantTable::GrantStatus(not_ram.error()), GNTST_bad_page);
  EXPECT_EQ(Flags(5), GTF_permit_access);                              // flags undone
  auto bad_ref = grants().Map(0, GrantTable::kEntriesPerFrame, true);  // beyond 1 frame
  ASSERT_FALSE(bad_ref);
  EXPECT_EQ(GrantTable::GrantStatus(bad_ref.error()), GNTST_bad_gntref);
  // A frame the table has but the guest never mapped holds no grants.
  ASSERT_TRUE(grants().Grow(2));
  EXPECT_FALSE(grants().Map(0, GrantTable::kEntriesPerFrame, true));
}

TEST_F(GrantsTest, PinsAreBoundedAndMovable) {
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);
  Grant(1, GTF_permit_access);
  std::vector<GrantMapping> maps;
  for (uint32_t i = 0; i < GrantTable::kMaxPins; ++i) {
    auto m = grants().Map(0, 1, true);
    ASSERT_TRUE(m);
    maps.push_back(std::move(*m));
  }
  auto over = grants().Map(0, 1, true);
  ASSERT_FALSE(over);
  EXPECT_EQ(GrantTable::GrantStatus(over.error()), GNTST_no_device_space);
  // A pinned entry keeps its frame even if the guest rewrites it (Xen's active entry).
  Grant(1, GTF_permit_access | GTF_reading, 0, 0x81);
  GrantMapping moved = std::move(maps.back());
  maps.pop_back();
  EXPECT_EQ(moved.gfn(), kDataGfn);
  maps.clear();
  EXPECT_EQ(Flags(1), GTF_permit_access | GTF_reading);
  moved.Reset();
  EXPECT_EQ(Flags(1), GTF_permit_access);
}

TEST_F(GrantsTest, CopyHelpers) {
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);
  Grant(1, GTF_permit_access);
  Grant(2, GTF_permit_access | GTF_readonly);
  const std::string text = "hello grant";
  ASSERT_TRUE(grants().CopyTo(0, 1, 100, std::as_bytes(std::span(text))));
  std::string back(text.size(), '\0');
  ASSERT_TRUE(grants().CopyFrom(0, 1, 100, std::as_writable_bytes(std::span(back))));
  EXPECT_EQ(back, text);
  EXPECT_EQ(Flags(1), GTF_permit_access);  // a copy pins only while it runs
  EXPECT_FALSE(grants().CopyTo(0, 2, 0, std::as_bytes(std::span(text))));
  auto beyond = grants().CopyFrom(0, 1, 4090, std::as_writable_bytes(std::span(back)));
  ASSERT_FALSE(beyond);
  EXPECT_EQ(GrantTable::GrantStatus(beyond.error()), GNTST_bad_copy_arg);
}

// A page a backend has mapped keeps its memory when the guest balloons it out (Xen holds a
// reference on it); a page nobody maps is released (the control).
TEST_F(GrantsTest, MappedPageIsNotReleasedByBallooning) {
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);
  Grant(1, GTF_permit_access);
  Put<uint32_t>(kDataGfn << 12, 0xabcd);
  auto m = grants().Map(0, 1, false);
  ASSERT_TRUE(m);
  auto balloon_out = [&](uint64_t gfn) {
    Put<uint64_t>(0x20000, gfn);
    xen_memory_reservation_t r{};
    SetHandleGva(r.extent_start, 0x20000);
    r.nr_extents = 1;
    r.domid = DOMID_SELF;
    Put(kArg, r);
    return Call(__HYPERVISOR_memory_op, XENMEM_decrease_reservation, kArg);
  };
  ASSERT_EQ(balloon_out(kDataGfn), 1);
  EXPECT_TRUE(platform_.released.empty());
  EXPECT_EQ(Get<uint32_t>(kDataGfn << 12), 0xabcdu);
  m->Reset();
  ASSERT_EQ(balloon_out(kDataGfn + 1), 1);
  ASSERT_EQ(platform_.released.size(), 1u);
  EXPECT_EQ(platform_.released[0].first, (kDataGfn + 1) << 12);
}

// The block backend's adapter: Xen's checks, the page pinned (in-use flags set, ballooning
// skips it) exactly while the blkif mapping lives.
TEST_F(GrantsTest, BlkifAdapterPinsForTheMappingsLife) {
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);
  Grant(1, GTF_permit_access);
  Grant(2, GTF_permit_access | GTF_readonly);
  Grant(3, GTF_permit_access, /*domid=*/5);
  Put<uint32_t>(kDataGfn << 12, 0x5678);
  blkif::XenGrantAccess access(grants());
  {
    auto page = access.Map(1, /*writable=*/true);
    ASSERT_TRUE(page);
    EXPECT_EQ(Flags(1), GTF_permit_access | GTF_reading | GTF_writing);
    uint32_t word;
    std::memcpy(&word, page->data(), 4);
    EXPECT_EQ(word, 0x5678u);
    std::memcpy(page->data(), "ok", 2);  // a read from disk lands in the guest's page
    EXPECT_EQ(grants().MappedGfns(), std::vector<uint64_t>{kDataGfn});
    blkif::GrantMapping moved = std::move(*page);
    EXPECT_EQ(Flags(1), GTF_permit_access | GTF_reading | GTF_writing);
  }
  EXPECT_EQ(Flags(1), GTF_permit_access);
  EXPECT_TRUE(grants().MappedGfns().empty());
  EXPECT_EQ(Get<uint16_t>(kDataGfn << 12), 'o' | ('k' << 8));
  EXPECT_TRUE(access.Map(2, /*writable=*/false));  // a write to disk reads a read-only grant
  EXPECT_FALSE(access.Map(2, /*writable=*/true));  // a read from disk may not write into it
  EXPECT_FALSE(access.Map(3, false));              // granted to another domain
  EXPECT_FALSE(access.Map(GrantTable::kEntriesPerFrame * 64, false));
}

// The guest flips its entry while a backend maps it from another thread: every map either
// succeeds on a permitted entry or fails cleanly, and the in-use flags end cleared.
TEST_F(GrantsTest, HostileEntryRacingBackend) {
  ASSERT_EQ(MapFrame(0, kFrameGfn), 0);
  Grant(1, GTF_permit_access);
  std::atomic<bool> stop{false};
  std::thread guest([&] {
    auto flags =
        std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(ram_.get() + (kFrameGfn << 12) + 8));
    for (uint32_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      flags.fetch_xor(GTF_readonly, std::memory_order_relaxed);
    }
  });
  int mapped = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    auto m = grants().Map(0, 1, false);
    (m ? mapped : refused)++;
  }
  stop = true;
  guest.join();
  EXPECT_EQ(mapped + refused, 20000);
  EXPECT_EQ(Flags(1) & (GTF_reading | GTF_writing), 0);
}

}  // namespace
}  // namespace xenkvm::xen::testing
