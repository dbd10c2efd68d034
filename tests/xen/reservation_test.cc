// Ballooning (XENMEM_decrease_reservation, increase_reservation, populate_physmap) against
// xen/common/memory.c's semantics: extents-done results, every refusal as "0 done" (or the
// continuation's start), holes that fault hypercall copies, zeroed pages, the reservation counts
// and the pages Xen keeps using (shared_info, vcpu_info, grant frames, console ring).
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/xen/hypercall_fixture.h"

namespace xenkvm::xen {
namespace {

using testing::HypercallTest;
using testing::kArg;
using testing::kRamSize;

constexpr uint64_t kList = 0x11000;  // extent list (GPA = GVA)
constexpr uint64_t kRamPages = kRamSize >> 12;
constexpr uint64_t kMemoryOp = __HYPERVISOR_memory_op;

class ReservationTest : public HypercallTest {
 protected:
  // One reservation op with the list at kList; returns the hypercall's result.
  long Op(uint64_t cmd, std::initializer_list<uint64_t> gfns, uint64_t nr, uint32_t order = 0,
          uint32_t flags = 0, domid_t domid = DOMID_SELF) {
    uint64_t i = 0;
    for (uint64_t g : gfns) Put(kList + 8 * i++, g);
    xen_memory_reservation_t r{};
    set_xen_guest_handle(r.extent_start, reinterpret_cast<xen_pfn_t*>(kList));
    r.nr_extents = nr;
    r.extent_order = order;
    r.mem_flags = flags;
    r.domid = domid;
    Put(kArg, r);
    return Call(kMemoryOp, cmd, kArg);
  }
  long Decrease(uint64_t gfn, uint32_t order = 0) {
    return Op(XENMEM_decrease_reservation, {gfn}, 1, order);
  }
  long Populate(uint64_t gfn, uint32_t order = 0) {
    return Op(XENMEM_populate_physmap, {gfn}, 1, order);
  }
  long Current() {
    Put(kArg, domid_t{DOMID_SELF});
    return Call(kMemoryOp, XENMEM_current_reservation, kArg);
  }
  bool Released(uint64_t gfn) {
    return std::any_of(platform_.released.begin(), platform_.released.end(), [&](auto r) {
      return gfn << 12 >= r.first && gfn << 12 < r.first + r.second;
    });
  }
  // A hypercall that writes into the page at gfn: xen_version(extraversion).
  long WriteInto(uint64_t gfn) {
    return Call(__HYPERVISOR_xen_version, XENVER_extraversion, gfn << 12);
  }
};

TEST_F(ReservationTest, DecreaseReleasesPageOnceThenReportsNothing) {
  Put<uint64_t>(0x100000, 0x1234);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages));
  EXPECT_EQ(Decrease(0x100), 1);
  EXPECT_TRUE(Released(0x100));
  EXPECT_EQ(Get<uint64_t>(0x100000), 0u);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 1));
  Put(kArg, domid_t{DOMID_SELF});
  EXPECT_EQ(Call(kMemoryOp, XENMEM_maximum_reservation, kArg), static_cast<long>(kRamPages));
  // XSA-277: the same frame again, and a third time: nothing to remove.
  EXPECT_EQ(Decrease(0x100), 0);
  EXPECT_EQ(Decrease(0x100), 0);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 1));
}

TEST_F(ReservationTest, HoleFaultsCopiesUntilPopulated) {
  EXPECT_EQ(WriteInto(0x100), 0);
  EXPECT_EQ(Decrease(0x100), 1);
  EXPECT_EQ(WriteInto(0x100), -XEN_EFAULT);
  Put<uint32_t>(0x100000, XENVER_version);  // a read from the hole faults too
  EXPECT_EQ(Call(__HYPERVISOR_event_channel_op_compat, 0x100000), -XEN_EFAULT);
  Put<uint64_t>(0x100000, 0x5555);  // the guest touched it meanwhile (it stays mapped here)
  EXPECT_EQ(Populate(0x100), 1);
  EXPECT_EQ(Get<uint64_t>(0x100000), 0u);  // a fresh page
  EXPECT_EQ(Current(), static_cast<long>(kRamPages));
  EXPECT_EQ(WriteInto(0x100), 0);
}

TEST_F(ReservationTest, PopulateNeedsRoomUnderMaxPages) {
  EXPECT_EQ(Populate(0x120), 0);  // already populated and tot == max: no page to give
  EXPECT_EQ(Decrease(0x100), 1);
  EXPECT_EQ(Decrease(0x101), 1);
  Put<uint64_t>(0x120000, 0x77);
  // Over a populated gfn: a fresh page replaces it; the old one still counts.
  EXPECT_EQ(Populate(0x120), 1);
  EXPECT_EQ(Get<uint64_t>(0x120000), 0u);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 1));
  EXPECT_EQ(Populate(0x100), 1);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages));
  EXPECT_EQ(Populate(0x101), 0);  // budget used up
  EXPECT_EQ(WriteInto(0x101), -XEN_EFAULT);
}

TEST_F(ReservationTest, IncreaseGivesUnreachablePagesWithinBudget) {
  EXPECT_EQ(Op(XENMEM_increase_reservation, {}, 1), 0);
  for (uint64_t g = 0x100; g < 0x103; ++g) EXPECT_EQ(Decrease(g), 1);
  for (int i = 0; i < 5; ++i) Put<uint64_t>(kList + 8 * i, 0xdead);
  EXPECT_EQ(Op(XENMEM_increase_reservation, {}, 5), 3);
  // A translated guest is told no frame numbers: the list is untouched.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Get<uint64_t>(kList + 8 * i), 0xdeadu);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages));
  EXPECT_EQ(WriteInto(0x100), -XEN_EFAULT);  // the gfns stay holes
  EXPECT_EQ(Decrease(0x104), 1);
  EXPECT_EQ(Op(XENMEM_increase_reservation, {}, 1, 1), 0);  // order 1 needs 2 pages
  EXPECT_EQ(Op(XENMEM_increase_reservation, {}, 1, 0), 1);
  // A null list is fine for increase (it is never read).
  EXPECT_EQ(Decrease(0x105), 1);
  xen_memory_reservation_t r{};
  r.nr_extents = 1;
  r.domid = DOMID_SELF;
  Put(kArg, r);
  EXPECT_EQ(Call(kMemoryOp, XENMEM_increase_reservation, kArg), 1);
}

TEST_F(ReservationTest, LargeExtentsAndPartialExtent) {
  EXPECT_EQ(Decrease(0x200, 9), 1);  // 2 MiB
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 512));
  EXPECT_EQ(Decrease(0x200, 10), 0);  // beyond a domU's max order
  EXPECT_EQ(Populate(0x200, 10), 0);
  EXPECT_EQ(Op(XENMEM_increase_reservation, {}, 1, 10), 0);
  EXPECT_EQ(Populate(0x200, 9), 1);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages));
  // A hole inside an extent ends the op there: the pages before it are gone, the extent isn't
  // counted.
  EXPECT_EQ(Decrease(0x205), 1);
  EXPECT_EQ(Decrease(0x200, 3), 0);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 6));
  EXPECT_EQ(WriteInto(0x204), -XEN_EFAULT);
  EXPECT_EQ(WriteInto(0x206), 0);
}

TEST_F(ReservationTest, ExtentCountsAndContinuations) {
  // Three extents, the second not RAM: one done.
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x100, kRamPages, 0x102}, 3), 1);
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x110, 0x111, 0x112}, 3), 3);
  // Continuation (start extent in cmd bits 6+): only the extents from there on.
  EXPECT_EQ(Op(XENMEM_decrease_reservation | (2 << kMemopExtentShift), {0x120, 0x121, 0x122}, 3),
            3);
  EXPECT_EQ(WriteInto(0x120), 0);
  EXPECT_EQ(WriteInto(0x122), -XEN_EFAULT);
  // A start at or past the end reports itself.
  EXPECT_EQ(Op(XENMEM_decrease_reservation | (5 << kMemopExtentShift), {0x130}, 3), 5);
  EXPECT_EQ(Op(XENMEM_decrease_reservation | (3 << kMemopExtentShift), {0x130}, 3), 3);
  EXPECT_EQ(WriteInto(0x130), 0);
  // Too many extents to encode a continuation.
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x140}, (UINT32_MAX >> kMemopExtentShift) + 1), 0);
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x140}, uint64_t{1} << 40), 0);
  EXPECT_EQ(WriteInto(0x140), 0);
  // The list runs into unmapped memory: the extents before it count.
  Put<uint64_t>(kRamSize - 8, 0x150);
  xen_memory_reservation_t r{};
  set_xen_guest_handle(r.extent_start, reinterpret_cast<xen_pfn_t*>(kRamSize - 8));
  r.nr_extents = 2;
  r.domid = DOMID_SELF;
  Put(kArg, r);
  EXPECT_EQ(Call(kMemoryOp, XENMEM_decrease_reservation, kArg), 1);
  // The struct itself unreadable: nothing done (or the continuation's start).
  EXPECT_EQ(Call(kMemoryOp, XENMEM_decrease_reservation, kRamSize + 0x1000), 0);
  EXPECT_EQ(Call(kMemoryOp, XENMEM_populate_physmap | (4 << kMemopExtentShift), kRamSize + 0x1000),
            4);
}

TEST_F(ReservationTest, RefusedRequestsDoNothing) {
  // Another domain (existing or not), unprivileged: nothing done. Our own id works.
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x100}, 1, 0, 0, 0), 0);
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x100}, 1, 0, 0, 7), 0);
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x100}, 1, 0, 0, DOMID_INVALID), 0);
  EXPECT_EQ(WriteInto(0x100), 0);
  EXPECT_EQ(Op(XENMEM_decrease_reservation, {0x100}, 1, 0, 0, 1), 1);
  // Gfns outside RAM, including ones that would wrap.
  EXPECT_EQ(Decrease(kRamPages), 0);
  EXPECT_EQ(Decrease(UINT64_MAX), 0);
  EXPECT_EQ(Decrease(UINT64_MAX - 1, 1), 0);
  EXPECT_EQ(Decrease(kRamPages - 1, 1), 0);  // last page removed, the next isn't RAM
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 2));
  EXPECT_EQ(Populate(kRamPages), 0);
  EXPECT_EQ(Populate(UINT64_MAX), 0);
  EXPECT_EQ(Populate(kRamPages - 1, 1), 0);
  // mem_flags: address width of a page or less; an exact NUMA node; populate-on-demand on
  // oneself.
  EXPECT_EQ(Op(XENMEM_populate_physmap, {0x100}, 1, 0, XENMEMF_address_bits(12)), 0);
  EXPECT_EQ(Op(XENMEM_populate_physmap, {0x100}, 1, 0, XENMEMF_exact_node(0)), 0);
  EXPECT_EQ(Op(XENMEM_populate_physmap, {0x100}, 1, 0, XENMEMF_populate_on_demand), 0);
  EXPECT_EQ(Op(XENMEM_populate_physmap, {0x100}, 1, 21, XENMEMF_populate_on_demand), 0);
  EXPECT_EQ(Op(XENMEM_populate_physmap, {0x100}, 1, 0, XENMEMF_node(0) | XENMEMF_address_bits(32)),
            1);
  EXPECT_EQ(WriteInto(0x100), 0);
  // The queries take no continuation.
  Put(kArg, domid_t{DOMID_SELF});
  EXPECT_EQ(Call(kMemoryOp, XENMEM_current_reservation | (1 << kMemopExtentShift), kArg),
            -XEN_EINVAL);
  EXPECT_EQ(Call(kMemoryOp, XENMEM_maximum_reservation | (1 << kMemopExtentShift), kArg),
            -XEN_EINVAL);
  EXPECT_EQ(Call(kMemoryOp, XENMEM_maximum_ram_page | (1 << kMemopExtentShift), kArg), -XEN_EINVAL);
}

TEST_F(ReservationTest, CompatLayout) {
  struct {
    uint32_t extent_start, nr_extents, extent_order, mem_flags;
    domid_t domid;
    uint16_t pad;
  } r{kList, 2, 0, 0, DOMID_SELF, 0};
  Put(kArg, r);
  Put<uint32_t>(kList, 0x100);
  Put<uint32_t>(kList + 4, 0x101);
  HypercallCall c;
  c.nr = kMemoryOp;
  c.compat = true;
  c.args = {XENMEM_decrease_reservation, kArg, 0, 0, 0};
  EXPECT_EQ(domain_->Hypercall(c), 2);
  EXPECT_EQ(WriteInto(0x101), -XEN_EFAULT);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 2));
}

TEST_F(ReservationTest, PagesXenKeepsUsingAreNeverReleased) {
  EXPECT_EQ(MapSharedInfo(0x50), 0);
  EXPECT_EQ(Get<uint32_t>(0x50000 + offsetof(shared_info, wc_version)), 2u);
  EXPECT_EQ(Decrease(0x50), 1);
  EXPECT_FALSE(Released(0x50));
  // Xen keeps its shared_info page; the engine keeps writing where it is, so it stays intact.
  EXPECT_EQ(Get<uint32_t>(0x50000 + offsetof(shared_info, wc_version)), 2u);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 1));
  EXPECT_EQ(Decrease(0x50), 0);
  EXPECT_EQ(Populate(0x50), 1);
  EXPECT_FALSE(Released(0x50));
  // Moving shared_info off a ballooned-out gfn releases that gfn; mapping it onto one fills it.
  EXPECT_EQ(Decrease(0x50), 1);
  EXPECT_EQ(Decrease(0x51), 1);
  platform_.released.clear();
  EXPECT_EQ(MapSharedInfo(0x51), 0);
  EXPECT_TRUE(Released(0x50));
  EXPECT_FALSE(Released(0x51));
  EXPECT_EQ(WriteInto(0x51), 0);
  EXPECT_EQ(Current(), static_cast<long>(kRamPages - 1));

  // A registered vcpu_info: kept; and registering one on a hole is refused.
  EXPECT_EQ(Decrease(0x61), 1);
  vcpu_register_vcpu_info info{0x61, 0, 0};
  Put(kArg, info);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 1, kArg), -XEN_EINVAL);
  info = {0x60, 0, 0};
  Put(kArg, info);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 1, kArg), 0);
  platform_.released.clear();
  EXPECT_EQ(Decrease(0x60), 1);
  EXPECT_FALSE(Released(0x60));

  // A grant frame mapped onto a hole fills it; ballooning it out keeps the page.
  xen_add_to_physmap_t x{};
  x.domid = DOMID_SELF;
  x.space = XENMAPSPACE_grant_table;
  x.idx = 0;
  x.gpfn = 0x61;
  Put(kArg, x);
  EXPECT_EQ(Call(kMemoryOp, XENMEM_add_to_physmap, kArg), 0);
  EXPECT_EQ(WriteInto(0x61), 0);
  EXPECT_EQ(Decrease(0x61), 1);
  EXPECT_FALSE(Released(0x61));

  // The console ring the backend writes into.
  domain_->SetParamFromVmm(HVM_PARAM_CONSOLE_PFN, 0x3fe);
  EXPECT_EQ(Decrease(0x3fe), 1);
  EXPECT_FALSE(Released(0x3fe));
  // An ordinary neighbour in the same extent is released.
  EXPECT_EQ(Decrease(0x3fc, 1), 1);
  EXPECT_TRUE(Released(0x3fc));
  EXPECT_TRUE(Released(0x3fd));
}

}  // namespace
}  // namespace xenkvm::xen
